//! Networks built from the differentiable layers in `nn`: the MLP and the paper's CBR, used as
//! students (with explicit backward passes, so their gradients are differentiable), teachers and
//! mask networks.

mod backward;
mod network;
mod tangent;

pub use network::{Input, Network, Trace};
pub use tangent::{GradientTangent, Linearisation};
