// Shows the text an F1 node returns in its UI result (adapter weights, the adaptive schedule's reason, the
// guidance curve, F1Evaluate's score...) on the node itself. The stock frontend draws `text` results only for
// core's Preview Any node, so without this the summaries appear nowhere.
import { app } from "../../../scripts/app.js"; // served at /extensions/ComfyUI-F1/js/

const WIDGET = "f1_result";

function showResult(node, lines) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!widget) {
    const element = document.createElement("textarea");
    element.className = "comfy-multiline-input";
    element.readOnly = true;
    element.style.opacity = 0.8;
    widget = node.addDOMWidget(WIDGET, "F1_RESULT", element, {
      getValue: () => element.value,
      setValue: (value) => { element.value = value; },
      serialize: false, // not sent with the prompt
    });
    widget.serialize = false; // not saved in widgets_values, so saved workflows keep their widget order
  }
  widget.value = lines.join("\n");
  node.setSize([Math.max(node.size[0], 320), node.computeSize()[1]]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "ComfyUI-F1.results",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith("F1")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      if (Array.isArray(message?.text) && message.text.length) showResult(this, message.text);
    };
  },
});
