//! Parity of shaders-wgsl/pool.wgsl: maxpool forward and backward against f64 loops.

use super::*;

fn maxpool_ref(x: &[f32], dy: &[f32], s: &PoolShape) -> (Vec<f64>, Vec<f64>) {
    let off = (s.padding / 2) as isize;
    let mut y = vec![0.0; s.output_len()];
    let mut dx = vec![0.0; s.input_len()];
    for bc in 0..s.batch * s.c {
        for oy in 0..s.out_h {
            for ox in 0..s.out_w {
                let mut best = f32::MIN;
                let mut bi = usize::MAX;
                for n in 0..s.size {
                    for m in 0..s.size {
                        let iy = (oy * s.stride + n) as isize - off;
                        let ix = (ox * s.stride + m) as isize - off;
                        let valid = iy >= 0 && ix >= 0 && iy < s.h as isize && ix < s.w as isize;
                        let i = if valid { (bc * s.h + iy as usize) * s.w + ix as usize } else { usize::MAX };
                        let v = if valid { x[i] } else { f32::MIN };
                        if v > best {
                            best = v;
                            bi = i;
                        }
                    }
                }
                let o = (bc * s.out_h + oy) * s.out_w + ox;
                y[o] = best as f64;
                dx[bi] += dy[o] as f64;
            }
        }
    }
    (y, dx)
}

#[test]
fn maxpool_forward_backward() {
    let g = gpu_or_skip!();
    // batch, c, h, w, size, stride, padding (Darknet default padding = size − 1). Windows apart
    // (stride ≥ size: the first and the last) take the backward kernel with one invocation per
    // output, the others the gather over every input.
    for (i, s) in [
        PoolShape::new(2, 3, 13, 13, 2, 2, 1),
        PoolShape::new(1, 2, 8, 7, 2, 1, 1),
        PoolShape::new(1, 3, 9, 11, 3, 2, 2),
        PoolShape::new(2, 2, 10, 10, 5, 1, 4),
        PoolShape::new(1, 2, 11, 10, 2, 3, 1),
    ]
    .into_iter()
    .enumerate()
    {
        // Quantised values make ties, so "first maximum wins" is exercised.
        let hx: Vec<f32> = data(s.input_len(), 110 + i as u64, -4.0, 4.0).iter().map(|v| v.round()).collect();
        let hdy = data(s.output_len(), 120 + i as u64, -1.0, 1.0);
        let dx0 = data(s.input_len(), 130 + i as u64, -1.0, 1.0);
        let (x, dy, dx) = (up(g, &hx), up(g, &hdy), up(g, &dx0));
        let y = g.alloc(s.output_len());
        g.maxpool_forward(&x, &y, &s);
        g.maxpool_backward(&x, &dy, &dx, &s);
        let (y_r, dx_r) = maxpool_ref(&hx, &hdy, &s);
        assert_close(&format!("maxpool fwd {s:?}"), &g.download(&y), &y_r, 0.0, 0.0);
        let dx_r: Vec<f64> = dx_r.iter().zip(&dx0).map(|(a, &b)| a + b as f64).collect();
        assert_close(&format!("maxpool bwd {s:?}"), &g.download(&dx), &dx_r, 1e-6, 1e-6);
    }
}
