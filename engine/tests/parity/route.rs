//! Parity of shaders-wgsl/route.wgsl: slice copies and channel scaling (exact).

use super::*;

#[test]
fn route_copy_slices_and_scale_channels() {
    let g = gpu_or_skip!();
    let hs = data(3 * 50, 170, -1.0, 1.0);
    let hd = data(3 * 70, 171, -1.0, 1.0);
    let (src, dst) = (up(g, &hs), up(g, &hd));
    for accumulate in [false, true] {
        let s = SliceCopy { batch: 3, len: 23, src_stride: 50, src_offset: 27, dst_stride: 70, dst_offset: 5, accumulate };
        g.upload(&dst, &hd);
        g.copy_slices(&src, &dst, &s);
        let mut want = f64s(&hd);
        for b in 0..3 {
            for j in 0..23 {
                let v = hs[b * 50 + 27 + j] as f64;
                let d = &mut want[b * 70 + 5 + j];
                *d = if accumulate { *d + v } else { v };
            }
        }
        assert_close(&format!("copy_slices acc={accumulate}"), &g.download(&dst), &want, 1e-6, 1e-7);
    }

    let (batch, ch, sp) = (2, 3, 263);
    let n = batch * ch * sp;
    let hx = data(n, 172, -1.0, 1.0);
    let hsc = data(batch * ch, 173, -1.0, 1.0);
    let (x, sc) = (up(g, &hx), up(g, &hsc));
    let y = g.alloc(n);
    g.scale_channels_forward(&x, &sc, &y, &ChannelShape::new(batch, ch, sp));
    let y_r: Vec<f64> = (0..n).map(|i| hx[i] as f64 * hsc[i / sp] as f64).collect();
    assert_close("scale_channels fwd", &g.download(&y), &y_r, 1e-6, 1e-7);
    let hdy = data(n, 174, -1.0, 1.0);
    let dx0 = data(n, 175, -1.0, 1.0);
    let ds0 = data(batch * ch, 176, -1.0, 1.0);
    let (dy, dx, ds) = (up(g, &hdy), up(g, &dx0), up(g, &ds0));
    g.scale_channels_backward(&x, &sc, &dy, &dx, &ds, &ChannelShape::new(batch, ch, sp));
    let dx_r: Vec<f64> = (0..n).map(|i| dx0[i] as f64 + hdy[i] as f64 * hsc[i / sp] as f64).collect();
    let mut ds_r = f64s(&ds0);
    let mut abs = vec![1.0; batch * ch];
    for i in 0..n {
        ds_r[i / sp] += hdy[i] as f64 * hx[i] as f64;
        abs[i / sp] += (hdy[i] * hx[i]).abs() as f64;
    }
    assert_close("scale_channels dx", &g.download(&dx), &dx_r, 1e-6, 1e-6);
    assert_sum_close("scale_channels dscale", &g.download(&ds), &ds_r, &abs);
}
