//! The engine contract of the core, implemented on dfdx's `Cpu` device, so that the
//! differential tests and `cargo xtask eval` run the dfdx loss beside the other engines.

use std::marker::PhantomData;

use dfdx::prelude::*;
use svsoftmax_core::{
    CosineMatrix, Engine, Error, Evaluation, Forward, Result, SvSoftmax, Targets, Upstream,
};

use crate::device::DfdxFloat;
use crate::{Implementation, SvSoftmaxLoss};

/// The dfdx loss on `Cpu` behind the core's [`Engine`] contract, computing in `E` with one
/// implementation.
///
/// The contract's f64 inputs are rounded to `E` and the results widened back. The gradient
/// is what dfdx's `backward` puts on the cosines: from [`SvSoftmaxLoss::loss`] for a scalar
/// upstream gradient, from [`SvSoftmaxLoss::row_losses`] for one per row.
#[derive(Debug, Clone)]
pub struct DfdxEngine<E> {
    name: String,
    implementation: Implementation,
    device: Cpu,
    element: PhantomData<E>,
}

/// Every implementation in both float types on `Cpu`: the engines the workspace's
/// differential tests run.
pub fn cpu_engines() -> Vec<Box<dyn Engine>> {
    let mut engines: Vec<Box<dyn Engine>> = Vec::new();
    for implementation in [Implementation::Composed, Implementation::Fused] {
        engines.push(Box::new(DfdxEngine::<f32>::new(implementation)));
        engines.push(Box::new(DfdxEngine::<f64>::new(implementation)));
    }
    engines
}

impl<E: DfdxFloat> DfdxEngine<E>
where
    Cpu: Device<E>,
{
    /// The engine running `implementation`, named `dfdx-<implementation>-<type>`.
    pub fn new(implementation: Implementation) -> Self {
        Self {
            name: format!("dfdx-{}-{}", implementation.name(), E::dtype()),
            implementation,
            device: Cpu::default(),
            element: PhantomData,
        }
    }

    fn tensor(&self, cosines: CosineMatrix<'_>) -> Result<Tensor<(usize, usize), E, Cpu>> {
        let data = cosines
            .as_slice()
            .iter()
            .map(|&value| E::round_from(value))
            .collect();
        self.device
            .try_tensor_from_vec(data, (cosines.n_rows(), cosines.n_classes()))
            .map_err(crate::device::device_error(
                "the engine's copy of the cosines",
            ))
    }

    fn loss(&self, config: &SvSoftmax) -> SvSoftmaxLoss {
        SvSoftmaxLoss::new(*config).with_implementation(self.implementation)
    }
}

impl<E: DfdxFloat> Engine for DfdxEngine<E>
where
    Cpu: Device<E>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn forward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
    ) -> Result<Forward> {
        let output = self
            .loss(config)
            .forward(self.tensor(cosines)?, targets)
            .map_err(|error| error.after_narrowing(cosines, E::dtype()))?;
        Ok(Forward {
            loss: output.loss.as_vec()[0].widen(),
            row_losses: output.row_losses,
            diagnostics: output.diagnostics,
        })
    }

    fn forward_backward(
        &self,
        config: &SvSoftmax,
        cosines: CosineMatrix<'_>,
        targets: &Targets,
        upstream: Upstream<'_>,
    ) -> Result<Evaluation> {
        // The reference's order: the shapes, then the upstream gradient, then the values.
        targets.check(cosines.n_rows(), cosines.n_classes())?;
        upstream.check(config.reduction(), cosines.n_rows())?;
        let forward = self.forward(config, cosines, targets)?;

        let input = self.tensor(cosines)?;
        let loss = self.loss(config);
        let grads = match upstream {
            Upstream::Scalar(value) => {
                let reduced = loss.loss(input.leaky_trace(), targets);
                (reduced.map_err(|error| error.after_narrowing(cosines, E::dtype()))?
                    * E::round_from(value))
                .backward()
            }
            Upstream::Rows(values) => {
                let rows = loss.row_losses(input.leaky_trace(), targets);
                let weights = values.iter().map(|&value| E::round_from(value)).collect();
                let weights = self
                    .device
                    .try_tensor_from_vec(weights, (cosines.n_rows(),))
                    .map_err(crate::device::device_error("the upstream gradient"))?;
                (rows.map_err(|error| error.after_narrowing(cosines, E::dtype()))? * weights)
                    .sum()
                    .backward()
            }
        };
        let grad_cosines: Vec<f64> = crate::host(&grads.get(&input))
            .iter()
            .map(|g| g.widen())
            .collect();
        if let Some(i) = grad_cosines.iter().position(|g| !g.is_finite()) {
            return Err(Error::Overflow {
                row: Some(i / cosines.n_classes()),
                quantity: "gradient",
                value: grad_cosines[i],
                dtype: E::dtype(),
            });
        }
        Ok(Evaluation {
            forward,
            grad_cosines,
        })
    }
}
