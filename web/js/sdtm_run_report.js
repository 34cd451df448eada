// SDTM Run Report: show the run's summary in the node itself. The server sends it as the node's UI
// output "summary" (the JSON report stays on the node's STRING output and in the UI output "text");
// the editor draws UI text only for nodes it knows, so this extension gives the node a read-only text box.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE = "SDTM_RunReport";
const WIDGET = "summary";

app.registerExtension({
  name: "ComfyUI-SDTM.RunReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      const widget = ComfyWidgets.STRING(this, WIDGET, ["STRING", { multiline: true }], app).widget;
      widget.serialize = false;  // shown, never saved in the workflow nor sent with the prompt
      widget.options.serialize = false;
      widget.value = "Run the workflow: the SDTM run summary appears here.";
      if (widget.element) {
        widget.element.readOnly = true;
      }
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === WIDGET);
      const summary = message?.summary?.[0];
      if (widget && summary !== undefined) {
        widget.value = summary;
      }
    };
  },
});
