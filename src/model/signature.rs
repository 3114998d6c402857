//! A graph's declared inputs and outputs, and the checks every family's contract is built from:
//! a port with this name, element type and rank; no input the server cannot feed. Each family
//! states its own contract with them at load (`florence2/signature.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ort::value::{TensorElementType, ValueType};

use super::ModelError;

/// Element types the server feeds or reads. Anything else is named in the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    Bool,
    Other(&'static str),
}

/// One input or output as the session declares it; symbolic dims are -1.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub elem: Elem,
    pub shape: Vec<i64>,
}

impl Port {
    pub fn from_outlet(outlet: &ort::value::Outlet) -> Self {
        let (elem, shape) = match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => {
                let elem = match ty {
                    TensorElementType::Float32 => Elem::F32,
                    TensorElementType::Int64 => Elem::I64,
                    TensorElementType::Bool => Elem::Bool,
                    TensorElementType::Float16 => Elem::Other("float16"),
                    _ => Elem::Other("another element type"),
                };
                (elem, shape.to_vec())
            }
            _ => (Elem::Other("a non-tensor value"), Vec::new()),
        };
        Self {
            name: outlet.name().to_string(),
            elem,
            shape,
        }
    }
}

/// The declared ports of one graph file.
pub struct GraphPorts<'a> {
    pub file: &'a Path,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

impl GraphPorts<'_> {
    pub(crate) fn error(&self, message: String) -> ModelError {
        ModelError::Signature {
            file: PathBuf::from(self.file),
            message,
        }
    }

    pub(crate) fn find<'p>(ports: &'p [Port], name: &str) -> Option<&'p Port> {
        ports.iter().find(|p| p.name == name)
    }

    /// Requires a port with this name, element type and rank.
    pub(crate) fn require(
        &self,
        is_input: bool,
        name: &str,
        elem: Elem,
        rank: usize,
    ) -> Result<&Port, ModelError> {
        let (ports, side) = if is_input {
            (&self.inputs, "input")
        } else {
            (&self.outputs, "output")
        };
        let port = Self::find(ports, name).ok_or_else(|| {
            let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
            self.error(format!(
                "missing {side} `{name}` (it has: {})",
                names.join(", ")
            ))
        })?;
        if port.elem != elem {
            let hint = if matches!(port.elem, Elem::Other("float16")) {
                " (float16 I/O is not supported; use the fp32 or keep_io_types files)"
            } else {
                ""
            };
            return Err(self.error(format!(
                "{side} `{name}` is {:?}, expected {elem:?}{hint}",
                port.elem
            )));
        }
        if port.shape.len() != rank {
            return Err(self.error(format!(
                "{side} `{name}` has rank {}, expected {rank}",
                port.shape.len()
            )));
        }
        Ok(port)
    }

    /// Inputs the server does not know how to feed make the session unusable: say so at load.
    pub(crate) fn refuse_unknown_inputs(&self, known: &BTreeSet<String>) -> Result<(), ModelError> {
        match self.inputs.iter().find(|p| !known.contains(&p.name)) {
            Some(port) => Err(self.error(format!(
                "unexpected input `{}`: this server cannot feed it",
                port.name
            ))),
            None => Ok(()),
        }
    }

    pub(crate) fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }
}

/// A dimension the graph fixes, or `None` when it is symbolic.
pub(crate) fn static_dim(dim: i64) -> Option<usize> {
    (dim > 0).then_some(dim as usize)
}

/// The declared ports of an open session.
pub(crate) fn ports<'a>(session: &ort::session::Session, file: &'a Path) -> GraphPorts<'a> {
    GraphPorts {
        file,
        inputs: session.inputs().iter().map(Port::from_outlet).collect(),
        outputs: session.outputs().iter().map(Port::from_outlet).collect(),
    }
}
