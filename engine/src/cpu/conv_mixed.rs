//! Mixed precision's convolution GEMMs (shaders-wgsl/conv_mixed.wgsl) on the CPU.
//!
//! The CPU runs mixed precision's convolutions with conv.rs's fp32 GEMMs: a product of two f16
//! values is exact in f32 (11 + 11 significant bits), so on f16-valued operands these GEMMs form
//! exactly the products f16 matrix hardware forms, and sum them in f32 as it does. They are the
//! reference the cooperative-matrix kernels are checked against (tests/parity/conv_mixed.rs);
//! only the order of the sums differs.
//!
//! What this twin adds is the contract the GPU kernels rely on: they stage every operand as f16,
//! which would round any other value silently. So under [`crate::backend::GemmOperands::F16`]
//! each CPU convolution checks that its operands already hold f16 values, and a mixed pass that
//! forgot to round an operand fails here, on any machine, instead of drifting on a GPU.

use std::cell::Cell;

use super::half::round_f16;

/// Panics naming the op, the operand and the first element that is not an f16 value (NaN
/// passes: it converts to an f16 NaN).
pub(crate) fn check_operands(op: &str, operands: &[(&str, &[Cell<f32>])]) {
    for (name, data) in operands {
        let bad = data.iter().map(Cell::get).enumerate().find(|&(_, v)| !v.is_nan() && round_f16(v).to_bits() != v.to_bits());
        if let Some((i, v)) = bad {
            panic!(
                "{op}: operand {name}[{i}] = {v:e} is not an f16 value, but the GEMM operands were declared f16 \
                 (mixed precision rounds every operand where it is stored)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(v: &[f32]) -> Vec<Cell<f32>> {
        v.iter().map(|&x| Cell::new(x)).collect()
    }

    #[test]
    fn f16_values_pass() {
        let v = cells(&[0.0, -0.0, 1.0, 0.5, 65504.0, f32::INFINITY, f32::NAN, 5.960_464_5e-8, round_f16(0.1)]);
        check_operands("conv_forward", &[("x", &v)]);
    }

    #[test]
    #[should_panic(expected = "conv_forward: operand w[1] = 1e-1 is not an f16 value")]
    fn other_values_are_refused() {
        let x = cells(&[1.0]);
        let w = cells(&[0.5, 0.1]);
        check_operands("conv_forward", &[("x", &x), ("w", &w)]);
    }
}
