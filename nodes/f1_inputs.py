"""Input checks for nodes whose `validate_inputs` takes numbers.

ComfyUI 0.3.75 skips its own min/max checks for every input a node's validate_inputs names (and for all of
them if it takes **kwargs), so a validator re-checks the inputs it names against the ranges the schema
declares. It also refuses NaN, which passes core's comparisons, and combo values not among the options,
which core does not check for V3 nodes."""
import math


def declared_limits_error(node, **values) -> str | None:
    """The first input of `node` (a V3 node class) whose value breaks its declared limits, as an error that
    names the node and the input; None if all keep them. None values (linked inputs, not yet known) pass."""
    schema = node.define_schema()
    declared = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        if value is None:
            continue
        spec = declared[name]
        options = getattr(spec, "options", None)
        if options is not None and value not in options:
            return f"{schema.node_id}: input '{name}' is {value!r}; choose one of {list(options)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = getattr(spec, "min", None), getattr(spec, "max", None)
            if isinstance(value, float) and not math.isfinite(value):  # a huge int is finite (and no float)
                return f"{schema.node_id}: input '{name}' is {value}; give a finite number in [{low}, {high}]"
            if (low is not None and value < low) or (high is not None and value > high):
                return f"{schema.node_id}: input '{name}' is {value}, outside its range [{low}, {high}]"
    return None


def raise_if_invalid(verdict):
    """For execute: a node re-runs its validator there, since inputs linked from other nodes reach the
    validator as None and are only known when the node runs."""
    if verdict is not True:
        raise ValueError(verdict)
