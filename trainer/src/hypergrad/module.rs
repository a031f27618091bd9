//! The fallback for students that are arbitrary burn modules (any `#[derive(Module)]` network,
//! a ResNet on a GPU say), which have no explicit backward passes: their trainable parameters
//! are flattened into theta, and the module is rebuilt from theta for every loss, its
//! parameters then being slices of theta, so burn's first-order autodiff gives gradients in
//! theta and phi. [`ModuleProblem`] is a [`LossProblem`], so hypergradients come from
//! [`super::finite`]: finite-difference Hessian-vector products, approximate and labelled so
//! (`HypergradientMethod::FiniteDifference` in manifests).

use std::collections::HashMap;
use std::ops::Range;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use super::finite::{self, LossProblem};
use super::ift::InverseHessian;
use super::plain;

/// Where each trainable parameter of a module sits in theta.
#[derive(Debug, Clone)]
pub struct ParameterLayout {
    slots: HashMap<ParamId, Range<usize>>,
    len: usize,
}

/// Why a module cannot stand in for theta.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModuleError {
    #[error(
        "the module has no trainable parameters: create it on an autodiff device \
         (`device.autodiff()`) so its parameters require gradients"
    )]
    NoTrainableParameters,
    #[error("theta has {actual} values but the module has {expected} trainable parameters")]
    LengthMismatch { expected: usize, actual: usize },
}

/// Collects the trainable float parameters (those that require gradients; running statistics
/// never do) in visiting order.
struct Collect {
    slots: HashMap<ParamId, Range<usize>>,
    values: Vec<Tensor<1>>,
    len: usize,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() || self.slots.contains_key(&param.id) {
            return;
        }
        let n = value.shape().num_elements();
        self.slots.insert(param.id, self.len..self.len + n);
        self.len += n;
        self.values.push(plain(&value.reshape([n])));
    }
}

/// Replaces each trainable parameter by its slice of theta.
struct Load<'a> {
    slots: &'a HashMap<ParamId, Range<usize>>,
    theta: &'a Tensor<1>,
}

impl ModuleMapper for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(range) = self.slots.get(&param.id).cloned() else {
            return param;
        };
        let theta = self.theta;
        param.map(|value| {
            theta
                .clone()
                .narrow(0, range.start, range.len())
                .reshape(value.shape())
        })
    }
}

impl ParameterLayout {
    /// The layout of `module`'s trainable parameters, and their values as theta.
    pub fn of<M: Module>(module: &M) -> Result<(Self, Tensor<1>), ModuleError> {
        let mut collect = Collect {
            slots: HashMap::new(),
            values: Vec::new(),
            len: 0,
        };
        module.visit(&mut collect);
        if collect.values.is_empty() {
            return Err(ModuleError::NoTrainableParameters);
        }
        let theta = Tensor::cat(collect.values, 0);
        let layout = Self {
            slots: collect.slots,
            len: collect.len,
        };
        Ok((layout, theta))
    }

    /// |theta|.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `theta` has one value per trainable parameter.
    pub fn check(&self, theta: &Tensor<1>) -> Result<(), ModuleError> {
        let actual = theta.dims()[0];
        if actual == self.len {
            Ok(())
        } else {
            Err(ModuleError::LengthMismatch {
                expected: self.len,
                actual,
            })
        }
    }

    /// `module` with its trainable parameters read from `theta`: gradients of anything computed
    /// with the result flow back to `theta`.
    pub fn load<M: Module>(&self, module: M, theta: &Tensor<1>) -> Result<M, ModuleError> {
        self.check(theta)?;
        Ok(module.map(&mut Load {
            slots: &self.slots,
            theta,
        }))
    }
}

/// A student given as a burn module, with its losses as closures: the inner loss
/// `inner(module, phi, step)` (a one-element tensor, differentiable in the module's parameters
/// and in phi) and the validation loss `validation(module)`.
pub struct ModuleProblem<M, I, V> {
    module: M,
    layout: ParameterLayout,
    inner: I,
    validation: V,
}

impl<M, I, V> ModuleProblem<M, I, V>
where
    M: Module,
    I: Fn(&M, &Tensor<1>, usize) -> Tensor<1>,
    V: Fn(&M) -> Tensor<1>,
{
    /// The problem and the module's current parameters as theta.
    pub fn new(module: M, inner: I, validation: V) -> Result<(Self, Tensor<1>), ModuleError> {
        let (layout, theta) = ParameterLayout::of(&module)?;
        let problem = Self {
            module,
            layout,
            inner,
            validation,
        };
        Ok((problem, theta))
    }

    pub fn layout(&self) -> &ParameterLayout {
        &self.layout
    }

    /// The approximate IFT hypergradient at `theta` and L_V (see [`finite::hypergradient`]),
    /// after checking that theta fits the module.
    pub fn hypergradient(
        &self,
        theta: &Tensor<1>,
        phi: &Tensor<1>,
        step: usize,
        method: InverseHessian,
        relative_step: f32,
    ) -> Result<(Tensor<1>, f32), ModuleError> {
        self.layout.check(theta)?;
        Ok(finite::hypergradient(
            self,
            theta,
            phi,
            step,
            method,
            relative_step,
        ))
    }

    /// The module with parameters `theta`. The engine only passes vectors of theta's length
    /// ([`Self::hypergradient`] checks the one it is given).
    fn module_at(&self, theta: &Tensor<1>) -> M {
        match self.layout.load(self.module.clone(), theta) {
            Ok(module) => module,
            Err(e) => unreachable!("ModuleProblem: {e}"),
        }
    }
}

impl<M, I, V> LossProblem for ModuleProblem<M, I, V>
where
    M: Module,
    I: Fn(&M, &Tensor<1>, usize) -> Tensor<1>,
    V: Fn(&M) -> Tensor<1>,
{
    fn inner_loss(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        (self.inner)(&self.module_at(theta), phi, step)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        (self.validation)(&self.module_at(theta))
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn::tensor::activation::tanh;

    use super::*;
    use crate::hypergrad::{dot, finite, leaf, scalar};
    use crate::nn::testing::{device, random, values};

    /// conv3x3(3)-BN-tanh-linear: trainable weights plus BatchNorm running statistics. tanh, not
    /// ReLU, keeps the loss twice differentiable everywhere: a central difference whose two points
    /// straddle a ReLU kink measures the kink, not the Hessian (seen as a 5x asymmetry in CI).
    #[derive(Module, Debug)]
    struct SmallCnn {
        conv: Conv2d,
        norm: BatchNorm,
        head: Linear,
    }

    const TRAINABLE: usize = (9 + 1) * 3 + 2 * 3 + (3 * 4 * 4 + 1) * 2;

    impl SmallCnn {
        fn new(device: &burn::tensor::Device) -> Self {
            Self {
                conv: Conv2dConfig::new([1, 3], [3, 3]).init(device),
                norm: BatchNormConfig::new(3).init(device),
                head: LinearConfig::new(3 * 4 * 4, 2).init(device),
            }
        }

        /// A module whose parameters come from the tests' seeded generator, not burn's unseeded
        /// initialiser, so every run checks the same network.
        fn seeded(device: &burn::tensor::Device) -> Self {
            Self::new(device).map(&mut SeededParameters)
        }

        fn forward(&self, x: Tensor<4>) -> Tensor<2> {
            let y = tanh(self.norm.forward(self.conv.forward(x)));
            let [n, c, h, w] = y.dims();
            self.head.forward(y.reshape([n, c * h * w]))
        }

        fn loss(&self, x: &Tensor<4>) -> Tensor<1> {
            self.forward(x.clone()).powi_scalar(2).sum()
        }
    }

    /// Replaces every trainable parameter by seeded values (a leaf that requires gradients).
    struct SeededParameters;

    impl ModuleMapper for SeededParameters {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|value| {
                if value.is_require_grad() {
                    random(value.dims())
                        .mul_scalar(0.5)
                        .autodiff()
                        .require_grad()
                } else {
                    value
                }
            })
        }
    }

    /// The module's own gradients, flattened in the layout's order.
    struct OwnGradients<'a> {
        grads: &'a burn::tensor::Gradients,
        values: Vec<f32>,
    }

    impl ModuleVisitor for OwnGradients<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                let grad = value
                    .grad(self.grads)
                    .expect("a trainable parameter has a gradient");
                self.values.extend(grad.to_data().iter::<f32>());
            }
        }
    }

    #[test]
    fn theta_holds_the_trainable_parameters_and_gradients_flow_back_to_it() {
        let module = SmallCnn::new(&device());
        let x = random([4, 1, 6, 6]);
        let (layout, theta) = ParameterLayout::of(&module).expect("trainable");
        // Running means and variances are buffers, not theta.
        assert_eq!(layout.len(), TRAINABLE);
        assert_eq!(theta.dims(), [TRAINABLE]);

        let grads = module.loss(&x).backward();
        let mut own = OwnGradients {
            grads: &grads,
            values: Vec::new(),
        };
        module.visit(&mut own);

        let theta_leaf = leaf(&theta);
        let rebuilt = layout.load(module.clone(), &theta_leaf).expect("fits");
        assert_eq!(
            values(&rebuilt.forward(x.clone())),
            values(&module.forward(x.clone()))
        );
        let grads = rebuilt.loss(&x).backward();
        let through_theta = values(&theta_leaf.grad(&grads).expect("theta gradient"));
        assert_eq!(through_theta.len(), own.values.len());
        for (a, b) in through_theta.iter().zip(&own.values) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }

    #[test]
    fn modules_without_trainable_parameters_and_wrong_lengths_are_refused() {
        let plain_module = SmallCnn::new(&burn::tensor::Device::flex());
        assert_eq!(
            ParameterLayout::of(&plain_module).err(),
            Some(ModuleError::NoTrainableParameters)
        );
        let module = SmallCnn::new(&device());
        let (layout, _) = ParameterLayout::of(&module).expect("trainable");
        let short = Tensor::<1>::zeros([3], &device());
        let err = layout.load(module, &short).expect_err("refused");
        assert_eq!(
            err,
            ModuleError::LengthMismatch {
                expected: TRAINABLE,
                actual: 3
            }
        );
        assert!(err.to_string().contains("theta has 3 values"), "{err}");
    }

    #[test]
    fn finite_difference_hessian_products_of_a_module_are_symmetric() {
        let x = random([6, 1, 6, 6]);
        let (problem, theta) = ModuleProblem::new(
            SmallCnn::seeded(&device()),
            |m: &SmallCnn, _phi: &Tensor<1>, _step| m.loss(&x),
            |m: &SmallCnn| m.loss(&x),
        )
        .expect("trainable");
        let phi = Tensor::<1>::zeros([1], &device());
        let (u, v) = (random([TRAINABLE]), random([TRAINABLE]));
        let hv =
            finite::hessian_vector_product(&problem, &theta, &phi, 0, &v, finite::DEFAULT_STEP);
        let hu =
            finite::hessian_vector_product(&problem, &theta, &phi, 0, &u, finite::DEFAULT_STEP);
        let (uhv, vhu) = (scalar(&dot(u, hv)), scalar(&dot(v, hu)));
        assert!(uhv.is_finite() && uhv.abs() > 1e-3, "u^T H v = {uhv}");
        assert!(
            (uhv - vhu).abs() <= 1e-2 * uhv.abs().max(vhu.abs()),
            "u^T H v = {uhv} but v^T H u = {vhu}"
        );
    }
}
