//! Learning-rate policies (darknet-spec §c), values worked out by hand.

use engine::cfg::{NetConfig, Origin, Policy};
use engine::lr::{learning_rate, learning_rate_with_draw};

/// [net] with Darknet's defaults, the given policy and lr.
fn net(policy: Policy, lr: f32) -> NetConfig {
    NetConfig {
        batch: 1,
        subdivisions: 1,
        width: 416,
        height: 416,
        channels: 3,
        momentum: 0.9,
        decay: 0.0001,
        learning_rate: lr,
        learning_rate_min: 0.00001,
        burn_in: 0,
        power: 4.0,
        max_batches: 0,
        policy,
        adam: false,
        b1: 0.9,
        b2: 0.999,
        eps: 0.000001,
        angle: 0.0,
        saturation: 1.0,
        exposure: 1.0,
        hue: 0.0,
        flip: true,
        mosaic: false,
        mosaic_bound: false,
        letter_box: false,
        mixup: false,
        blur: 0,
        gaussian_noise: 0,
        origin: Origin::default(),
    }
}

#[track_caller]
fn assert_rel(got: f32, want: f64) {
    let tol = 1e-5 * want.abs().max(1e-12); // f32 ratios as in Darknet
    assert!(
        (got as f64 - want).abs() <= tol,
        "got {got:e}, want {want:e}"
    );
}

#[test]
fn constant() {
    let n = net(Policy::Constant, 0.001);
    for it in [0, 1, 17, 1_000_000] {
        assert_rel(learning_rate(&n, it), 0.001);
    }
}

#[test]
fn burn_in_ramps_with_power_then_hands_over() {
    let mut n = net(
        Policy::Steps {
            steps: vec![1500],
            scales: vec![0.1],
        },
        0.001,
    );
    n.burn_in = 1000;
    assert_eq!(learning_rate(&n, 0), 0.0);
    assert_rel(learning_rate(&n, 500), 0.001 * 0.5f64.powi(4)); // 6.25e-5
    assert_rel(learning_rate(&n, 100), 0.001 * 1e-4); // (1/10)^4
    n.power = 2.0;
    assert_rel(learning_rate(&n, 500), 0.001 * 0.25);
    // At burn_in the policy takes over (steps: 1500 not reached yet).
    assert_rel(learning_rate(&n, 1000), 0.001);
    assert_rel(learning_rate(&n, 1500), 0.0001);
}

#[test]
fn step() {
    let n = net(
        Policy::Step {
            step: 100,
            scale: 0.5,
        },
        0.01,
    );
    assert_rel(learning_rate(&n, 99), 0.01);
    assert_rel(learning_rate(&n, 100), 0.005);
    assert_rel(learning_rate(&n, 250), 0.0025); // 250/100 = 2 drops
}

#[test]
fn steps_apply_scales_at_or_after_each_step() {
    let n = net(
        Policy::Steps {
            steps: vec![100, 200],
            scales: vec![0.1, 0.5],
        },
        0.01,
    );
    assert_rel(learning_rate(&n, 99), 0.01);
    assert_rel(learning_rate(&n, 100), 0.001);
    assert_rel(learning_rate(&n, 199), 0.001);
    assert_rel(learning_rate(&n, 200), 0.0005);
    assert_rel(learning_rate(&n, 5000), 0.0005);
}

#[test]
fn exp() {
    let n = net(Policy::Exp { gamma: 0.99 }, 0.001);
    // 0.99^10 = 0.904382075…
    assert_rel(learning_rate(&n, 10), 0.001 * 0.904_382_075_008_804_5);
    assert_rel(learning_rate(&n, 0), 0.001);
}

#[test]
fn poly() {
    let mut n = net(Policy::Poly, 0.001);
    n.max_batches = 1000;
    assert_rel(learning_rate(&n, 500), 0.001 * 0.0625); // (1 - 1/2)^4
    assert_rel(learning_rate(&n, 900), 0.001 * 1e-4); // (0.1)^4
    assert_eq!(learning_rate(&n, 1000), 0.0);
}

#[test]
fn sig() {
    let n = net(
        Policy::Sig {
            gamma: 0.1,
            step: 50,
        },
        0.001,
    );
    assert_rel(learning_rate(&n, 50), 0.0005); // 1/(1+e^0)
    // 1/(1+e^1) = 0.268941421…; before the step e^-1: 1/(1+0.367879) = 0.731058579…
    assert_rel(learning_rate(&n, 60), 0.001 * 0.268_941_421_369_995);
    assert_rel(learning_rate(&n, 40), 0.001 * 0.731_058_578_630_005);
}

#[test]
fn random_uses_the_given_draw() {
    let mut n = net(Policy::Random, 0.001);
    n.power = 2.0;
    assert_rel(learning_rate_with_draw(&n, 10, Some(0.5)), 0.00025);
    assert_rel(learning_rate_with_draw(&n, 10, Some(0.1)), 0.001 * 0.01);
    // Without a draw: the base rate.
    assert_rel(learning_rate(&n, 10), 0.001);
}

#[test]
fn sgdr_cycles_grow_by_mult() {
    let mut n = net(
        Policy::Sgdr {
            cycle: 100,
            mult: 2,
        },
        0.01,
    );
    n.learning_rate_min = 0.001;
    let mid = 0.001 + 0.5 * 0.009; // cos = 0 → halfway: 0.0055
    // First cycle [0, 100]: 0 → top, 50 → middle, 100 → bottom (inclusive end).
    assert_rel(learning_rate(&n, 0), 0.01);
    assert_rel(learning_rate(&n, 50), mid);
    assert_rel(learning_rate(&n, 100), 0.001);
    // Second cycle starts after 100 and lasts 200: 101 → near the top, 200 → middle, 300 → bottom.
    let at_101 = 0.001 + 0.5 * 0.009 * (1.0 + (std::f64::consts::PI / 200.0).cos());
    assert_rel(learning_rate(&n, 101), at_101);
    assert_rel(learning_rate(&n, 200), mid);
    assert_rel(learning_rate(&n, 300), 0.001);
    // Third cycle: 300 → 700 (length 400), middle at 500.
    assert_rel(learning_rate(&n, 500), mid);
    // 25% into cycle 1: cos(π/4) = √½.
    let q = 0.001 + 0.5 * 0.009 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
    assert_rel(learning_rate(&n, 25), q);
}
