//! Reference cfgs shipped inside the crate, so `--model yolov4-tiny` works without files.

/// Names accepted by [`builtin`] and [`super::load`].
pub const BUILTIN_NAMES: [&str; 4] = ["yolov4-tiny", "yolov4-tiny-3l", "yolov3-tiny", "yolov7-tiny"];

/// The text of a built-in cfg (unchanged copies of Darknet's files).
pub fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "yolov4-tiny" => include_str!("../../cfg/yolov4-tiny.cfg"),
        "yolov4-tiny-3l" => include_str!("../../cfg/yolov4-tiny-3l.cfg"),
        "yolov3-tiny" => include_str!("../../cfg/yolov3-tiny.cfg"),
        "yolov7-tiny" => include_str!("../../cfg/yolov7-tiny.cfg"),
        _ => return None,
    })
}
