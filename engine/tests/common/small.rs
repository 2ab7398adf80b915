//! A small detector for whole-step tests that must run fast on lavapipe: two conv+BN layers, a
//! maxpool and a [yolo] head at 16×16, batch 4 in 2 passes, constant learning rate (so that the
//! step's rate does not depend on the iteration); and random batches for it.

use engine::cfg::ModelCfg;

const CFG: &str = "
[net]
batch=4
subdivisions=2
width=16
height=16
channels=3
learning_rate=0.01
momentum=0.9
decay=0.0005
policy=constant

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=2,3, 4,5, 6,7
classes=1
num=3
";

#[allow(dead_code)] // not every test crate that includes `common` uses it
pub fn cfg() -> ModelCfg {
    engine::cfg::parse_str(CFG, "small.cfg").expect("cfg parses").0
}

/// `n` batches of 4 random images with two boxes each.
#[allow(dead_code)]
pub fn batches(n: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    super::random_batches(n, 4, 16, 2, 0.1..0.5, 1, 11)
}
