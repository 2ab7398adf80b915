//! A composed network's parameter gradients against central finite differences of a scalar loss
//! L = Σ r ⊙ output (r fixed, random). The network covers conv-BN-leaky, route with groups,
//! a stride-2 conv with mish, a stride-1 maxpool, upsample, route concat, a 1×1 conv, shortcut
//! and a linear conv with bias.

use engine::cpu::CpuBackend;
use engine::network::{BuildOptions, Mode, Network};
use engine::Backend;
use rand::{Rng, SeedableRng};

const CFG: &str = "
[net]
batch=2
subdivisions=1
width=10
height=12
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=4
size=3
stride=2
pad=1
activation=mish

[maxpool]
size=2
stride=1

[upsample]
stride=2

[route]
layers=-1,0

[convolutional]
batch_normalize=1
filters=8
size=1
stride=1
pad=1
activation=leaky

[shortcut]
from=0
activation=linear

[convolutional]
filters=5
size=3
stride=1
pad=1
activation=linear
";

fn loss(net: &Network<CpuBackend>, r: &[f32]) -> f64 {
    net.forward(Mode::Train, 0, 1);
    let out = net.backend.download(&net.layers.last().unwrap().output);
    out.iter().zip(r).map(|(&o, &w)| o as f64 * w as f64).sum()
}

#[test]
fn composed_network_parameter_gradients_match_finite_differences() {
    let (cfg, _) = engine::cfg::parse_str(CFG, "gradcheck.cfg").expect("cfg parses");
    let net = Network::build(CpuBackend::new(), cfg, &BuildOptions { seed: 3, ..Default::default() }).expect("builds");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let images: Vec<f32> = (0..net.backend.len(&net.input)).map(|_| rng.random_range(0.0..1.0)).collect();
    let truths = vec![0.0; net.backend.len(&net.truths)];
    net.set_input(&images, &truths).unwrap();
    let out_len = net.backend.len(&net.layers.last().unwrap().output);
    let r: Vec<f32> = (0..out_len).map(|_| rng.random_range(-1.0..1.0)).collect();
    let seed = net.backend.alloc(out_len);
    net.backend.upload(&seed, &r);

    net.zero_grads();
    loss(&net, &r);
    net.backward_seeded(1, Some(&seed));

    let h: f32 = std::env::var("GRADCHECK_H").ok().and_then(|v| v.parse().ok()).unwrap_or(5e-4);
    let mut worst = 0.0f64;
    for (pi, p) in net.params().iter().enumerate() {
        let grad = net.backend.download(&p.grad);
        let mut value = net.backend.download(&p.value);
        let picks: Vec<usize> = (0..6).map(|_| rng.random_range(0..p.len)).collect();
        let (mut num_sq, mut diff_sq) = (0.0f64, 0.0f64);
        for &k in &picks {
            let orig = value[k];
            value[k] = orig + h;
            net.backend.upload(&p.value, &value);
            let lp = loss(&net, &r);
            value[k] = orig - h;
            net.backend.upload(&p.value, &value);
            let lm = loss(&net, &r);
            value[k] = orig;
            net.backend.upload(&p.value, &value);
            let num = (lp - lm) / (2.0 * h as f64);
            if std::env::var("GRADCHECK_VERBOSE").is_ok() { println!("p{pi}[{k}] num {num:.6} ana {:.6}", grad[k]); }
            num_sq += num * num;
            diff_sq += (num - grad[k] as f64).powi(2);
        }
        let rel = diff_sq.sqrt() / num_sq.sqrt().max(1e-3);
        worst = worst.max(rel);
        assert!(rel < 2e-2, "param tensor {pi}: relative gradient error {rel:.2e} (tolerance 2e-2)");
    }
    println!("composed network: worst relative gradient error {worst:.2e} (tolerance 2e-2)");
}
