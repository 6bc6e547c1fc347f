//! A dense float tensor: what models take and return here.

use super::{ErrorKind, InferError};

/// Dimensions outermost first, elements in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor whose element count matches its dimensions, or an error naming it.
    pub fn new(name: &str, dims: Vec<usize>, data: Vec<f32>) -> Result<Self, InferError> {
        let expected: usize = dims.iter().product();
        if expected != data.len() {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                name,
                format!(
                    "dimensions {dims:?} hold {expected} elements but {} were given",
                    data.len()
                ),
            ));
        }
        Ok(Tensor { dims, data })
    }

    pub fn zeros(dims: Vec<usize>) -> Self {
        let len = dims.iter().product();
        Tensor {
            dims,
            data: vec![0.0; len],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
