//! Parity of shaders-wgsl/bias.wgsl: bias add and its gradient against f64 loops.

use super::*;

#[test]
fn bias_add_and_backward() {
    let g = gpu_or_skip!();
    let (batch, ch, sp) = (3, 5, 301);
    let hy = data(batch * ch * sp, 80, -1.0, 1.0);
    let hb = data(ch, 81, -1.0, 1.0);
    let (y, bias) = (up(g, &hy), up(g, &hb));
    g.bias_add(&y, &bias, &ChannelShape::new(batch, ch, sp));
    let want: Vec<f64> = (0..hy.len()).map(|i| hy[i] as f64 + hb[(i / sp) % ch] as f64).collect();
    assert_close("bias_add", &g.download(&y), &want, 1e-6, 1e-6);
    let db0 = data(ch, 82, -1.0, 1.0);
    let db = up(g, &db0);
    g.bias_backward(&y, &db, &ChannelShape::new(batch, ch, sp));
    let yv = f64s(&g.download(&y));
    let mut want = f64s(&db0);
    let mut abs = vec![1.0; ch];
    for (i, v) in yv.iter().enumerate() {
        want[(i / sp) % ch] += v;
        abs[(i / sp) % ch] += v.abs();
    }
    assert_sum_close("bias_backward", &g.download(&db), &want, &abs);
}
