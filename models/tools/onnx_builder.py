"""A small helper for writing ONNX graphs by hand from numpy weights.

Why by hand: there is no torch here, and the Florence-2 export's contract (names, the merged
`If` decoder, empty placeholders) is easier to state exactly than to coax out of an exporter.

    g = Graph("encoder")
    y = g.MatMul(x, g.weight("w", array))      # any ONNX op: g.<OpType>(*inputs, **attributes)
    model = g.to_model(inputs=[...], outputs=[...])

Subgraphs (the branches of an `If`) are `Graph(parent=g)`: they share the parent's name counter,
so every value name in the model is unique (ORT wants SSA form across subgraphs), and their
weights land in the outermost graph, so both decoder branches read the same initializers.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization exists; old enough for onnxruntime-node 1.2x / ORT 1.17+
IR_VERSION = 8
PRODUCER = ("altimage make_florence2", "1")  # fixed: the files must be byte-reproducible

_ELEM = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
}
FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


class Graph:
    def __init__(self, name: str, parent: "Graph | None" = None, prefix: str = ""):
        self.name = name
        self.parent = parent
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        if parent is None:
            self.initializers: list[onnx.TensorProto] = []
            self.known_weights: set[str] = set()
            self.const_cache: dict[tuple, str] = {}
            self.counter: dict[str, int] = {}

    @property
    def root(self) -> "Graph":
        g = self
        while g.parent is not None:
            g = g.parent
        return g

    # ---- names -------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        counter = self.root.counter
        n = counter.get(hint, 0)
        counter[hint] = n + 1
        return f"{self.prefix}{hint}_{n}"

    # ---- weights and constants -----------------------------------------------------------------
    def weight(self, name: str, array: np.ndarray) -> str:
        """Registers a named initializer in the outermost graph (once) and returns its name."""
        root = self.root
        if name not in root.known_weights:
            root.known_weights.add(name)
            root.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, value, dtype=np.float32) -> str:
        """A small constant as an outer-scope initializer, shared by value."""
        arr = np.asarray(value, dtype=dtype)
        root = self.root
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in root.const_cache:
            name = f"const_{len(root.const_cache)}"
            root.const_cache[key] = name
            root.weight(name, arr)
        return root.const_cache[key]

    def i64(self, *values) -> str:
        """A 1-D int64 constant, e.g. a Reshape target."""
        return self.const(list(values), np.int64)

    def local_constant(self, array: np.ndarray, hint: str) -> str:
        """A Constant node inside this (sub)graph. Used for values a branch must *output*: ORT
        refuses a subgraph output that is an outer-scope value returned directly (spec P2)."""
        out = self.fresh(hint)
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), out + "_value")
        self.nodes.append(helper.make_node("Constant", [], [out], name=out + "_node", value=tensor))
        return out

    # ---- nodes -------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, **attrs):
        if isinstance(outputs, int):
            out_names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            out_names = list(outputs)
        node = helper.make_node(op_type, list(inputs), out_names,
                                name=self.fresh(op_type + "_node"), **attrs)
        self.nodes.append(node)
        return out_names[0] if len(out_names) == 1 else out_names

    def __getattr__(self, op_type: str):
        # g.MatMul(a, b), g.Transpose(x, perm=[...]): ONNX op types are capitalised.
        if op_type[:1].isupper():
            return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)
        raise AttributeError(op_type)

    # ---- assembly ------------------------------------------------------------------------------
    @staticmethod
    def value_info(name: str, elem: int, shape) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, elem, shape)

    def to_graph(self, inputs, outputs) -> onnx.GraphProto:
        inits = self.initializers if self.parent is None else []
        return helper.make_graph(self.nodes, self.name, inputs, outputs, initializer=inits)

    def to_model(self, inputs, outputs) -> onnx.ModelProto:
        model = helper.make_model(self.to_graph(inputs, outputs),
                                  opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER[0], producer_version=PRODUCER[1])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model


def save_model(model: onnx.ModelProto, path) -> int:
    """Serialises deterministically (no timestamps anywhere in the proto); returns the byte size."""
    data = model.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
