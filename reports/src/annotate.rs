//! Detections drawn onto an image, as `darknet detector test` draws them: a box per detection in
//! its class's colour (line width grows with the image), and a label "name 87%" on a filled
//! background above the box. Pure: RGB pixels in, RGB pixels out; the caller writes the file.
//!
//! Boxes and backgrounds are written pixel by pixel (exact edges); only the text goes through
//! plotters (vendored DejaVu Sans via ab_glyph). Plotters places glyphs relative to its anchor in a
//! font-dependent way, so each label is rendered into a scratch buffer first and its ink measured,
//! which keeps the text inside its background whatever the size.

use plotters::backend::{BitMapBackend, DrawingBackend, RGBPixel};
use plotters::style::{FontDesc, FontFamily, FontStyle, RGBColor};

use crate::ReportError;
use crate::charts::register_fonts;

/// One detection to draw: class index, confidence in [0, 1] and its box in pixels of the image
/// (left/top inclusive edges, right/bottom the far edges; clamped when drawn).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Annotation {
    pub class: usize,
    pub confidence: f32,
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

/// An inclusive pixel rectangle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelRect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl PixelRect {
    pub fn contains(&self, x: u32, y: u32) -> bool {
        (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }
}

/// The drawn image and where each box and label went (same order as the annotations).
#[derive(Clone, Debug, PartialEq)]
pub struct Annotated {
    /// Interleaved RGB, same size as the input.
    pub rgb: Vec<u8>,
    pub boxes: Vec<PixelRect>,
    /// The label backgrounds, clipped to the image (`None` when wholly outside).
    pub labels: Vec<Option<PixelRect>>,
}

/// Colour of class `class` of `classes`: Darknet's palette walk (6 hues, the class index
/// scattered by 123457 mod classes), so a model's colours match what Darknet users know.
pub fn class_colour(class: usize, classes: usize) -> [u8; 3] {
    const HUES: [[f32; 3]; 6] = [[1., 0., 1.], [0., 0., 1.], [0., 1., 1.], [0., 1., 0.], [1., 1., 0.], [1., 0., 0.]];
    let classes = classes.max(1);
    let offset = (class.wrapping_mul(123_457)) % classes;
    let ratio = offset as f32 / classes as f32 * 5.0;
    let (i, j) = (ratio.floor() as usize, ratio.ceil() as usize);
    let t = ratio - i as f32;
    // Darknet's channel order in the table is (b, g, r).
    let ch = |c: usize| (((1.0 - t) * HUES[i][c] + t * HUES[j][c]) * 255.0).round() as u8;
    [ch(2), ch(1), ch(0)]
}

/// Box line width for an image: 1 px up to ~400 px, then 0.5 % of the shorter side.
pub fn line_width(width: u32, height: u32) -> u32 {
    ((width.min(height) as f32 * 0.005) as u32).max(1)
}

/// Label text height in pixels: 3 % of the shorter side, between 10 and 48.
pub fn font_px(width: u32, height: u32) -> u32 {
    ((width.min(height) as f32 * 0.03).round() as u32).clamp(10, 48)
}

/// The label Darknet prints for a detection: "name 87%".
pub fn label_text(names: &[String], class: usize, confidence: f32) -> String {
    let name = names.get(class).cloned().unwrap_or_else(|| class.to_string());
    format!("{name} {:.0}%", confidence * 100.0)
}

/// The pixel rectangle of a box, Darknet's way: edges truncated to integers, clamped to the image.
pub fn box_rect(a: &Annotation, width: u32, height: u32) -> PixelRect {
    let cx = |v: f32| (v.max(0.0) as u32).min(width - 1);
    let cy = |v: f32| (v.max(0.0) as u32).min(height - 1);
    let (x0, x1) = (cx(a.left), cx(a.right));
    let (y0, y1) = (cy(a.top), cy(a.bottom));
    PixelRect { x0: x0.min(x1), y0: y0.min(y1), x1: x0.max(x1), y1: y0.max(y1) }
}

/// Draws every annotation onto a copy of `rgb` (`width`×`height`, interleaved RGB). Boxes first,
/// then labels, so a label is never hidden by another box.
pub fn annotate(width: u32, height: u32, rgb: &[u8], dets: &[Annotation], names: &[String]) -> Result<Annotated, ReportError> {
    draw(width, height, rgb, dets, names, &|d| label_text(names, d.class, d.confidence))
}

/// As [`annotate`], for labelled objects: the label is the class name alone (no confidence).
pub fn annotate_truth(width: u32, height: u32, rgb: &[u8], truths: &[Annotation], names: &[String]) -> Result<Annotated, ReportError> {
    draw(width, height, rgb, truths, names, &|d| names.get(d.class).cloned().unwrap_or_else(|| d.class.to_string()))
}

fn draw(width: u32, height: u32, rgb: &[u8], dets: &[Annotation], names: &[String], text: &dyn Fn(&Annotation) -> String) -> Result<Annotated, ReportError> {
    let err = |message: String| ReportError::Chart { name: "annotate".into(), message };
    if width == 0 || height == 0 || rgb.len() != width as usize * height as usize * 3 {
        return Err(err(format!("{} bytes is not a {width}x{height} RGB image", rgb.len())));
    }
    let classes = names.len().max(dets.iter().map(|d| d.class + 1).max().unwrap_or(1));
    let mut img = Canvas { w: width, h: height, px: rgb.to_vec() };
    let thick = line_width(width, height);
    let boxes: Vec<PixelRect> = dets.iter().map(|d| box_rect(d, width, height)).collect();
    for (d, r) in dets.iter().zip(&boxes) {
        img.frame(*r, thick, class_colour(d.class, classes));
    }
    let size = font_px(width, height);
    let mut labels = Vec::with_capacity(dets.len());
    for (d, r) in dets.iter().zip(&boxes) {
        let bg = class_colour(d.class, classes);
        let label = render_label(&text(d), size, bg).map_err(err)?;
        // Above the box when it fits, else inside it under the top edge; kept inside the image.
        let x = r.x0.min(width.saturating_sub(label.w)) as i64;
        let y = if r.y0 >= label.h { (r.y0 - label.h) as i64 } else { r.y0 as i64 };
        labels.push(img.paste(&label, x, y));
    }
    Ok(Annotated { rgb: img.px, boxes, labels })
}

/// An RGB image being drawn on.
struct Canvas {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: u32, y: u32, c: [u8; 3]) {
        let i = (y as usize * self.w as usize + x as usize) * 3;
        self.px[i..i + 3].copy_from_slice(&c);
    }

    /// Darknet's draw_box_width: `thick` nested 1-px rectangles from the outer edge inwards.
    fn frame(&mut self, r: PixelRect, thick: u32, c: [u8; 3]) {
        for k in 0..thick {
            let (x0, y0) = (r.x0 + k, r.y0 + k);
            let (Some(x1), Some(y1)) = (r.x1.checked_sub(k), r.y1.checked_sub(k)) else { break };
            if x0 > x1 || y0 > y1 {
                break;
            }
            for x in x0..=x1 {
                self.set(x, y0, c);
                self.set(x, y1, c);
            }
            for y in y0..=y1 {
                self.set(x0, y, c);
                self.set(x1, y, c);
            }
        }
    }

    /// Copies `l` with its top-left at (x, y), clipped; returns the covered rectangle.
    fn paste(&mut self, l: &Label, x: i64, y: i64) -> Option<PixelRect> {
        let cx0 = x.max(0);
        let cy0 = y.max(0);
        let cx1 = (x + l.w as i64).min(self.w as i64) - 1;
        let cy1 = (y + l.h as i64).min(self.h as i64) - 1;
        if cx1 < cx0 || cy1 < cy0 {
            return None;
        }
        for py in cy0..=cy1 {
            for px in cx0..=cx1 {
                let s = (((py - y) as usize) * l.w as usize + (px - x) as usize) * 3;
                self.set(px as u32, py as u32, [l.px[s], l.px[s + 1], l.px[s + 2]]);
            }
        }
        Some(PixelRect { x0: cx0 as u32, y0: cy0 as u32, x1: cx1 as u32, y1: cy1 as u32 })
    }
}

/// A rendered label: text on its background, padding included.
struct Label {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

/// Renders `text` at `size` px onto a scratch buffer filled with `bg` at `origin`; returns the
/// buffer, its size and the ink's bounding box (None when nothing was drawn).
fn scratch(text: &str, size: u32, bg: [u8; 3], fg: RGBColor) -> Result<(Vec<u8>, u32, u32, Option<PixelRect>), String> {
    // Generous room: no glyph of DejaVu Sans is wider than its em, none reaches a size beyond
    // its anchor; the ink is measured afterwards anyway.
    let (w, h) = ((text.chars().count() as u32 + 2) * size, 3 * size);
    let mut px = bg.repeat((w * h) as usize);
    {
        let mut back = BitMapBackend::<RGBPixel>::with_buffer_and_format(&mut px, (w, h)).map_err(|e| e.to_string())?;
        let style = FontDesc::new(FontFamily::SansSerif, size as f64, FontStyle::Normal).color(&fg);
        back.draw_text(text, &style, (size as i32, size as i32)).map_err(|e| e.to_string())?;
        back.present().map_err(|e| e.to_string())?;
    }
    let mut ink: Option<PixelRect> = None;
    for (i, p) in px.chunks_exact(3).enumerate() {
        if p != bg {
            let (x, y) = ((i as u32) % w, (i as u32) / w);
            ink = Some(match ink {
                None => PixelRect { x0: x, y0: y, x1: x, y1: y },
                Some(r) => PixelRect { x0: r.x0.min(x), y0: r.y0.min(y), x1: r.x1.max(x), y1: r.y1.max(y) },
            });
        }
    }
    Ok((px, w, h, ink))
}

/// The label of `text`: its ink horizontally, and vertically the span of "Hg" (so labels of one
/// size share one height whatever their letters), with a padding of size/5 all round.
fn render_label(text: &str, size: u32, bg: [u8; 3]) -> Result<Label, String> {
    register_fonts();
    let luminance = 0.299 * bg[0] as f32 + 0.587 * bg[1] as f32 + 0.114 * bg[2] as f32;
    let fg = if luminance > 128.0 { RGBColor(0, 0, 0) } else { RGBColor(255, 255, 255) };
    let (px, sw, sh, ink) = scratch(text, size, bg, fg)?;
    let (_, _, _, reference) = scratch("Hg", size, bg, fg)?;
    let (Some(ink), Some(reference)) = (ink, reference) else {
        return Err(format!("the label font drew nothing for {text:?}"));
    };
    let pad = (size / 5).max(1);
    let x0 = ink.x0.saturating_sub(pad);
    let x1 = (ink.x1 + pad).min(sw - 1);
    let y0 = ink.y0.min(reference.y0).saturating_sub(pad);
    let y1 = (ink.y1.max(reference.y1) + pad).min(sh - 1);
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in y0..=y1 {
        let s = ((y * sw + x0) * 3) as usize;
        out.extend_from_slice(&px[s..s + (w * 3) as usize]);
    }
    Ok(Label { w, h, px: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["dog".into(), "bicycle".into()]
    }

    #[test]
    fn colours_differ_between_classes() {
        let c: Vec<[u8; 3]> = (0..6).map(|k| class_colour(k, 6)).collect();
        for i in 0..c.len() {
            for j in i + 1..c.len() {
                assert_ne!(c[i], c[j], "classes {i} and {j}");
            }
        }
        // One class: the first palette entry (magenta).
        assert_eq!(class_colour(0, 1), [255, 0, 255]);
    }

    #[test]
    fn box_changes_exactly_its_border_and_label_text_sits_in_its_background() {
        let (w, h) = (120u32, 100u32);
        let grey = 90u8;
        let src = vec![grey; (w * h * 3) as usize];
        let det = Annotation { class: 1, confidence: 0.874, left: 30.0, top: 40.0, right: 80.0, bottom: 90.0 };
        assert_eq!(line_width(w, h), 1, "this test expects a 1-px line");
        let out = annotate(w, h, &src, &[det], &names()).expect("annotate");
        assert_eq!(out.boxes[0], PixelRect { x0: 30, y0: 40, x1: 80, y1: 90 });
        let label = out.labels[0].expect("label inside the image");
        // The label sits right above the box, starting at its left edge.
        assert_eq!((label.x0, label.y1 + 1), (30, 40));
        let colour = class_colour(1, 2);
        let at = |x: u32, y: u32| {
            let i = ((y * w + x) * 3) as usize;
            [out.rgb[i], out.rgb[i + 1], out.rgb[i + 2]]
        };
        let border = |x: u32, y: u32| {
            ((x == 30 || x == 80) && (40..=90).contains(&y)) || ((y == 40 || y == 90) && (30..=80).contains(&x))
        };
        let (mut ink, mut bg) = (0, 0);
        for y in 0..h {
            for x in 0..w {
                let p = at(x, y);
                if border(x, y) {
                    assert_eq!(p, colour, "border pixel ({x}, {y})");
                } else if label.contains(x, y) {
                    if p == colour {
                        bg += 1;
                    } else {
                        ink += 1;
                    }
                } else {
                    assert_eq!(p, [grey; 3], "pixel ({x}, {y}) is neither border nor label");
                }
            }
        }
        assert!(ink > 20, "label text left {ink} pixels of ink");
        assert!(bg > ink, "label background is mostly background ({bg} vs {ink})");
        // The ink does not touch the background's edge (padding all round).
        for x in label.x0..=label.x1 {
            assert_eq!(at(x, label.y0), colour);
            assert_eq!(at(x, label.y1), colour);
        }
        for y in label.y0..=label.y1 {
            assert_eq!(at(label.x0, y), colour);
            assert_eq!(at(label.x1, y), colour);
        }
    }

    #[test]
    fn thick_lines_grow_inwards_and_labels_fall_inside_at_the_top() {
        let (w, h) = (400u32, 400u32);
        let src = vec![0u8; (w * h * 3) as usize];
        let det = Annotation { class: 0, confidence: 0.5, left: 0.0, top: 0.0, right: 399.9, bottom: 399.9 };
        let out = annotate(w, h, &src, &[det], &names()).expect("annotate");
        assert_eq!(line_width(w, h), 2);
        let at = |x: u32, y: u32| out.rgb[((y * w + x) * 3) as usize..((y * w + x) * 3 + 3) as usize].to_vec();
        let c = class_colour(0, 2).to_vec();
        assert_eq!(at(200, 399), c);
        assert_eq!(at(200, 398), c);
        assert_eq!(at(200, 397), vec![0, 0, 0]);
        let label = out.labels[0].expect("label");
        assert_eq!((label.x0, label.y0), (0, 0), "no room above: label inside the box");
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        assert!(annotate(4, 4, &[0; 10], &[], &names()).is_err());
    }
}
