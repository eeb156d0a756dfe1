// ppokit studio's frontend extension: shows a node's result lines (progress, SPS and ETA on a
// trainer; the evaluation return; files written) in a read-only "result" widget on the node.
// The learning curve itself arrives as the node's image output (ComfyUI draws it).
import { app } from "../../scripts/app.js";

const RESULT = "result";

app.registerExtension({
  name: "ppokit.results",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.python_module !== "ppokit.nodes") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const text = output?.text?.join("\n");
      if (!text) return;
      let widget = this.widgets?.find((w) => w.name === RESULT);
      if (!widget) {
        widget = this.addWidget("text", RESULT, text, () => {}, { serialize: false });
        widget.serialize = false; // never part of the saved workflow or the prompt
      }
      widget.value = text;
      this.setDirtyCanvas(true, true);
    };
  },
});
