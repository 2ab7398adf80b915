//! Parity of shaders-wgsl/resample.wgsl (and avgpool): average pool, upsample and reorg against host loops.

use super::*;

#[test]
fn avgpool_upsample_reorg() {
    let g = gpu_or_skip!();
    let (batch, ch, sp) = (2, 3, 299);
    let hx = data(batch * ch * sp, 140, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(batch * ch);
    g.avgpool_forward(&x, &y, &ChannelShape::new(batch, ch, sp));
    let y_r: Vec<f64> = (0..batch * ch).map(|bc| hx[bc * sp..(bc + 1) * sp].iter().map(|&v| v as f64).sum::<f64>() / sp as f64).collect();
    assert_close("avgpool fwd", &g.download(&y), &y_r, 1e-5, 1e-6);
    let hdy = data(batch * ch, 141, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.avgpool_backward(&dy, &dx, &ChannelShape::new(batch, ch, sp));
    let dx_r: Vec<f64> = (0..hx.len()).map(|i| hx[i] as f64 + hdy[i / sp] as f64 / sp as f64).collect();
    assert_close("avgpool bwd", &g.download(&dx), &dx_r, 1e-6, 1e-7);

    let s = UpsampleShape { batch: 2, c: 3, h: 5, w: 7, stride: 2, scale: 0.5 };
    let hx = data(s.input_len(), 150, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(s.output_len());
    g.upsample_forward(&x, &y, &s);
    let (oh, ow) = (s.h * s.stride, s.w * s.stride);
    let y_r: Vec<f64> = (0..s.output_len()).map(|o| {
        let bc = o / (oh * ow);
        let (oy, ox) = ((o % (oh * ow)) / ow, o % ow);
        0.5 * hx[(bc * s.h + oy / 2) * s.w + ox / 2] as f64
    }).collect();
    assert_close("upsample fwd", &g.download(&y), &y_r, 1e-6, 1e-7);
    let hdy = data(s.output_len(), 151, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.upsample_backward(&dy, &dx, &s);
    let mut dx_r = f64s(&hx);
    for o in 0..s.output_len() {
        let bc = o / (oh * ow);
        let (oy, ox) = ((o % (oh * ow)) / ow, o % ow);
        dx_r[(bc * s.h + oy / 2) * s.w + ox / 2] += 0.5 * hdy[o] as f64;
    }
    assert_close("upsample bwd", &g.download(&dx), &dx_r, 1e-6, 1e-6);

    // reorg: Darknet reorg_cpu(forward = 0) with input dims: out[in_index] = x[out_index].
    let s = ReorgShape { batch: 2, c: 8, h: 6, w: 4, stride: 2 };
    let hx = data(s.len(), 160, -1.0, 1.0);
    let x = up(g, &hx);
    let y = g.alloc(s.len());
    g.reorg_forward(&x, &y, &s);
    let out_c = s.c / 4;
    let mut y_r = vec![0.0; s.len()];
    let mut pair = vec![0usize; s.len()];
    for b in 0..s.batch {
        for k in 0..s.c {
            for j in 0..s.h {
                for i in 0..s.w {
                    let in_index = i + s.w * (j + s.h * (k + s.c * b));
                    let (c2, offset) = (k % out_c, k / out_c);
                    let (w2, h2) = (i * 2 + offset % 2, j * 2 + offset / 2);
                    let out_index = w2 + s.w * 2 * (h2 + s.h * 2 * (c2 + out_c * b));
                    y_r[in_index] = hx[out_index] as f64;
                    pair[in_index] = out_index;
                }
            }
        }
    }
    assert_close("reorg fwd", &g.download(&y), &y_r, 0.0, 0.0);
    let hdy = data(s.len(), 161, -1.0, 1.0);
    let dy = up(g, &hdy);
    let dx = up(g, &hx);
    g.reorg_backward(&dy, &dx, &s);
    let mut dx_r = f64s(&hx);
    for i in 0..s.len() {
        dx_r[pair[i]] += hdy[i] as f64;
    }
    assert_close("reorg bwd", &g.download(&dx), &dx_r, 1e-6, 1e-7);
}
