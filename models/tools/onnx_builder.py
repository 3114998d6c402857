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

from pathlib import Path

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
    def __init__(self, name: str, parent: "Graph | None" = None, prefix: str = "",
                 external: "ExternalData | None" = None):
        self.name = name
        self.parent = parent
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        if parent is None:
            self.initializers: list[onnx.TensorProto] = []
            self.known_weights: set[str] = set()
            self.const_cache: dict[tuple, str] = {}
            self.counter: dict[str, int] = {}
            self.external = external  # None: every initializer is stored inside the .onnx

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
            if root.external is not None:
                root.initializers.append(root.external.add(name, array))
            else:
                root.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array),
                                                                 name))
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

    def to_model(self, inputs, outputs, opsets: dict | None = None,
                 producer: tuple = PRODUCER, check: bool = True) -> onnx.ModelProto:
        """opsets: extra domains, e.g. {"com.microsoft": 1}. check=False for models whose
        weights live in an external file (check the saved path instead: check_saved)."""
        imports = [helper.make_opsetid("", OPSET)]
        imports += [helper.make_opsetid(domain, v) for domain, v in (opsets or {}).items()]
        model = helper.make_model(self.to_graph(inputs, outputs), opset_imports=imports,
                                  producer_name=producer[0], producer_version=producer[1])
        model.ir_version = IR_VERSION
        if check:
            onnx.checker.check_model(model)
        return model


class ExternalData:
    """Streams initializers into one external-data file (`NAME.onnx_data` next to `NAME.onnx`,
    the onnx-community layout) as they are registered, so a multi-GB model never sits in memory
    twice. Tensors under `threshold` bytes stay inside the graph (onnx's own default). Offsets
    are aligned (64 B; 64 KiB for tensors of 1 MiB or more, so ONNX Runtime can map them), and
    the padding is zeros: the file is as reproducible as the weights."""

    def __init__(self, path, threshold: int = 1024):
        self.path = Path(path)
        self.location = self.path.name  # stored relative: resolved next to the .onnx
        self.threshold = threshold
        self.file = open(self.path, "wb")
        self.offset = 0

    def add(self, name: str, array: np.ndarray) -> onnx.TensorProto:
        arr = np.ascontiguousarray(array)
        if arr.nbytes < self.threshold:
            return numpy_helper.from_array(arr, name)
        align = 65536 if arr.nbytes >= (1 << 20) else 64
        pad = (-self.offset) % align
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(arr.tobytes())
        tensor = onnx.TensorProto()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        tensor.dims.extend(arr.shape)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(self.offset)),
                           ("length", str(arr.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += arr.nbytes
        return tensor

    def close(self):
        self.file.close()


def check_saved(path) -> None:
    """onnx's checker on a saved model (path form: it follows external data; ops of domains it
    does not know, such as com.microsoft, are not checked)."""
    onnx.checker.check_model(str(path))


def save_model(model: onnx.ModelProto, path) -> int:
    """Serialises deterministically (no timestamps anywhere in the proto); returns the byte size."""
    data = model.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
