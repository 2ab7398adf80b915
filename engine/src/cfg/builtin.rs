//! Reference cfgs shipped inside the crate, so `--model yolov4-tiny` works without files.

/// Names accepted by [`builtin`] and [`super::load`].
pub const BUILTIN_NAMES: [&str; 5] = ["yolov4-tiny", "yolov4-tiny-3l", "yolov3-tiny", "yolov7-tiny", "tiny-classifier"];

/// The text of a built-in cfg (the detectors: unchanged copies of Darknet's files; `tiny-classifier`:
/// this project's small classifier for 32×32 images).
pub fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "yolov4-tiny" => include_str!("../../cfg/yolov4-tiny.cfg"),
        "yolov4-tiny-3l" => include_str!("../../cfg/yolov4-tiny-3l.cfg"),
        "yolov3-tiny" => include_str!("../../cfg/yolov3-tiny.cfg"),
        "yolov7-tiny" => include_str!("../../cfg/yolov7-tiny.cfg"),
        "tiny-classifier" => include_str!("../../cfg/tiny-classifier.cfg"),
        _ => return None,
    })
}
