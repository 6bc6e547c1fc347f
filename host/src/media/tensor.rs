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
        // Checked: dimensions whose product wraps (65536^4 on 64 bits) hold no count.
        let Some(expected) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
            return Err(InferError::new(
                ErrorKind::InvalidArgument,
                name,
                format!("dimensions {dims:?} hold more elements than a tensor can"),
            ));
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_must_count_the_elements_without_wrapping() {
        assert!(Tensor::new("t", vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::new("t", vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("hold 6 elements but 5"), "{err}");
        let err = Tensor::new("t", vec![65536; 4], Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("more elements than a tensor can"),
            "{err}"
        );
    }
}
