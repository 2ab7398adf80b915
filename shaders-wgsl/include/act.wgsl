// Darknet activations (darknet-spec §b), shared by activation.wgsl and the fused batch-norm
// kernels. Codes (ACT_*) come from the generated preamble (engine::shapes::Activation::code).
// The gradient uses the output y for leaky/relu/logistic/tanh and the input x for
// mish/swish/hard_mish, as Darknet does.

const MISH_THRESHOLD: f32 = 20.0;

// The activation a kernel applies: the params' `act`, or ACT_ONLY where the module was built for
// one (CPU adapters, pipelines.rs: llvmpipe evaluates every arm of a switch on a value it cannot
// see is constant, so a kernel built for any activation would compute all seven).
fn act_code(act: u32) -> u32 {
    return select(act, ACT_ONLY, ACT_ONLY != ACT_ANY);
}

fn logistic(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Darknet's tanh_activate; saturates cleanly to ±1 (exp overflow gives 2/inf = 0).
fn tanh_d(x: f32) -> f32 {
    return 2.0 / (1.0 + exp(-2.0 * x)) - 1.0;
}

fn softplus(x: f32) -> f32 {
    if (x > MISH_THRESHOLD) {
        return x;
    }
    if (x < -MISH_THRESHOLD) {
        return exp(x);
    }
    return log(exp(x) + 1.0);
}

fn activate(x: f32, act: u32) -> f32 {
    switch act_code(act) {
        case ACT_LOGISTIC: { return logistic(x); }
        case ACT_RELU: { return select(0.0, x, x > 0.0); }
        case ACT_LEAKY: { return select(0.1 * x, x, x > 0.0); }
        case ACT_TANH: { return tanh_d(x); }
        case ACT_MISH: { return x * tanh_d(softplus(x)); }
        case ACT_SWISH: { return x * logistic(x); }
        case ACT_HARD_MISH: {
            if (x > 0.0) { return x; }
            if (x > -2.0) { return x * x * 0.5 + x; }
            return 0.0;
        }
        default: { return x; }
    }
}

fn gradient(x: f32, y: f32, act: u32) -> f32 {
    switch act_code(act) {
        case ACT_LOGISTIC: { return y * (1.0 - y); }
        case ACT_RELU: { return select(0.0, 1.0, y > 0.0); }
        case ACT_LEAKY: { return select(0.1, 1.0, y > 0.0); }
        case ACT_TANH: { return 1.0 - y * y; }
        case ACT_MISH: {
            let sp = softplus(x);
            let grad_sp = 1.0 - exp(-sp);
            let tsp = tanh_d(sp);
            let grad_tsp = (1.0 - tsp * tsp) * grad_sp;
            return x * grad_tsp + tsp;
        }
        case ACT_SWISH: {
            let s = logistic(x);
            let sy = x * s;
            return sy + s * (1.0 - sy);
        }
        case ACT_HARD_MISH: {
            if (x > 0.0) { return 1.0; }
            if (x > -2.0) { return x + 1.0; }
            return 0.0;
        }
        default: { return 1.0; }
    }
}
