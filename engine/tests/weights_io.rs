//! .weights reading/writing against the Darknet-produced fixture (darknet-spec §f).

use std::path::{Path, PathBuf};

use engine::weights::{
    ConvDims, ConvParams, Extent, WeightsError, encode_weights, expected_file_size, float_count,
    parse_weights, read_weights, write_weights,
};

const FIXTURE: &str = "/work/shared/reference/fixtures/darknet-yolov4-tiny-96";

fn conv(filters: usize, c_in: usize, size: usize, bn: bool) -> Option<ConvDims> {
    Some(ConvDims {
        filters,
        c_in,
        size,
        groups: 1,
        batch_normalize: bn,
    })
}

/// yolov4-tiny with 3 classes (the fixture's model.cfg), one entry per layer; input channels
/// worked out by hand from the routes (route groups=2 halves, concatenations add).
fn yolov4_tiny_3() -> Vec<Option<ConvDims>> {
    vec![
        conv(32, 3, 3, true),    // 0
        conv(64, 32, 3, true),   // 1
        conv(64, 64, 3, true),   // 2
        None,                    // 3 route -1 group 1/2 -> 32
        conv(32, 32, 3, true),   // 4
        conv(32, 32, 3, true),   // 5
        None,                    // 6 route -1,-2 -> 64
        conv(64, 64, 1, true),   // 7
        None,                    // 8 route -6,-1 -> 64+64
        None,                    // 9 maxpool
        conv(128, 128, 3, true), // 10
        None,                    // 11 route group -> 64
        conv(64, 64, 3, true),   // 12
        conv(64, 64, 3, true),   // 13
        None,                    // 14 route -> 128
        conv(128, 128, 1, true), // 15
        None,                    // 16 route -6,-1 -> 128+128
        None,                    // 17 maxpool
        conv(256, 256, 3, true), // 18
        None,                    // 19 route group -> 128
        conv(128, 128, 3, true), // 20
        conv(128, 128, 3, true), // 21
        None,                    // 22 route -> 256
        conv(256, 256, 1, true), // 23
        None,                    // 24 route -6,-1 -> 256+256
        None,                    // 25 maxpool
        conv(512, 512, 3, true), // 26
        conv(256, 512, 1, true), // 27
        conv(512, 256, 3, true), // 28
        conv(24, 512, 1, false), // 29 head: 3*(5+3) filters, no BN
        None,                    // 30 yolo
        None,                    // 31 route -4 -> layer 27: 256
        conv(128, 256, 1, true), // 32
        None,                    // 33 upsample
        None,                    // 34 route -1,23 -> 128+256
        conv(256, 384, 3, true), // 35
        conv(24, 256, 1, false), // 36
        None,                    // 37 yolo
    ]
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-weights-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn fixture_weights() -> PathBuf {
    Path::new(FIXTURE).join("init.weights")
}

#[test]
fn expected_sizes_match_darknet_files() {
    let dims = yolov4_tiny_3();
    assert_eq!(dims.len(), 38);
    let on_disk = std::fs::metadata(fixture_weights()).unwrap().len() as usize;
    assert_eq!(on_disk, 23_539_796);
    assert_eq!(expected_file_size(&dims, dims.len()), on_disk);
    assert_eq!(on_disk, 20 + 4 * float_count(&dims, dims.len()));
    // Spec §f: yolov4-tiny.conv.29 (layers 0..28, 17 convs) is 19,789,716 bytes.
    assert_eq!(dims.iter().take(29).flatten().count(), 17);
    assert_eq!(expected_file_size(&dims, 29), 19_789_716);
}

#[test]
fn float_count_by_hand() {
    // BN conv: 4 per filter (bias, scale, mean, var) + weights.
    let d = ConvDims {
        filters: 32,
        c_in: 3,
        size: 3,
        groups: 1,
        batch_normalize: true,
    };
    assert_eq!(d.float_count(), 4 * 32 + 32 * 3 * 9); // 992
    // Depthwise (groups = c): weights 8 * (8/8) * 3*3 = 72.
    let d = ConvDims {
        filters: 8,
        c_in: 8,
        size: 3,
        groups: 8,
        batch_normalize: true,
    };
    assert_eq!(d.float_count(), 32 + 72);
    // Head without BN: biases only.
    let d = ConvDims {
        filters: 24,
        c_in: 512,
        size: 1,
        groups: 1,
        batch_normalize: false,
    };
    assert_eq!(d.float_count(), 24 + 24 * 512);
}

#[test]
fn fixture_reads_and_rewrites_to_identical_bytes() {
    let dims = yolov4_tiny_3();
    let path = fixture_weights();
    let w = read_weights(&path, &dims, Extent::All).unwrap();
    assert_eq!(
        (
            w.header.major,
            w.header.minor,
            w.header.revision,
            w.header.seen
        ),
        (0, 2, 5, 0)
    );
    assert_eq!(w.cutoff, 38);
    for (i, (d, p)) in dims.iter().zip(&w.layers).enumerate() {
        assert_eq!(d.is_some(), p.is_some(), "layer {i}");
        if let (Some(d), Some(p)) = (d, p) {
            assert_eq!(p.biases.len(), d.filters);
            assert_eq!(p.weights.len(), d.weight_count());
            assert_eq!(p.scales.is_some(), d.batch_normalize);
            if let Some(v) = &p.rolling_variance {
                // Darknet initialises rolling variance to 1 and scales to 1.
                assert!(v.iter().all(|&x| x == 1.0), "layer {i} rolling_variance");
            }
            assert!(
                p.weights.iter().any(|&x| x != 0.0),
                "layer {i} weights all zero"
            );
        }
    }
    let original = std::fs::read(&path).unwrap();
    let again = encode_weights("again", w.header.seen, &dims, &w.layers, None).unwrap();
    assert!(
        again == original,
        "re-encoded bytes differ from the Darknet file"
    );
}

#[test]
fn partial_cutoff_29_like_darknet_partial() {
    let dims = yolov4_tiny_3();
    let full = read_weights(&fixture_weights(), &dims, Extent::All).unwrap();
    let out = tmp("conv.29");
    write_weights(&out, 0, &dims, &full.layers, Some(29)).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 19_789_716);

    let part = read_weights(&out, &dims, Extent::UpTo(29)).unwrap();
    assert_eq!(part.cutoff, 29);
    for i in 0..38 {
        if i < 29 {
            assert_eq!(part.layers[i], full.layers[i], "layer {i}");
        } else {
            assert!(part.layers[i].is_none(), "layer {i} should not be loaded");
        }
    }
    // Loading the partial file with the full cfg: Prefix finds the boundary after layer 28.
    let pre = read_weights(&out, &dims, Extent::Prefix).unwrap();
    assert_eq!(pre.cutoff, 29);
    assert_eq!(pre.layers, part.layers);
    // The full file as a Prefix covers everything.
    assert_eq!(
        read_weights(&fixture_weights(), &dims, Extent::Prefix)
            .unwrap()
            .cutoff,
        38
    );

    // Demanding all layers from the partial file: one-line error with file and both sizes.
    let err = read_weights(&out, &dims, Extent::All).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(
        err,
        WeightsError::SizeMismatch {
            expected: 23_539_796,
            found: 19_789_716,
            ..
        }
    ));
    assert!(
        msg.contains("conv.29") && msg.contains("19789716") && msg.contains("23539796"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn trailing_or_missing_bytes_are_errors() {
    let dims = yolov4_tiny_3();
    let mut bytes = std::fs::read(fixture_weights()).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    let err = parse_weights(&bytes, "extra.weights", &dims, Extent::All).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("extra.weights:") && msg.contains("23539800") && msg.contains("23539796"),
        "{msg}"
    );
    // Not a layer boundary either.
    let err = parse_weights(&bytes, "extra.weights", &dims, Extent::Prefix).unwrap_err();
    assert!(matches!(err, WeightsError::NoLayerBoundary { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("the whole cfg needs only 23539796"),
        "{err}"
    );

    // Cut in the middle of layer 29's weights: Prefix names the boundaries either side.
    let cut = 19_789_716 + 400;
    let err = parse_weights(&bytes[..cut], "cut.weights", &dims, Extent::Prefix).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("19789716 bytes after layer 28"), "{msg}");
    let after_29 = 19_789_716 + 4 * (24 + 24 * 512);
    assert!(
        msg.contains(&format!("{after_29} bytes after layer 29")),
        "{msg}"
    );

    let err = parse_weights(&bytes[..10], "tiny.weights", &dims, Extent::All).unwrap_err();
    assert!(
        matches!(err, WeightsError::ShortHeader { found: 10, .. }),
        "{err}"
    );
    let err = read_weights(Path::new("/nonexistent/x.weights"), &dims, Extent::All).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/x.weights:"),
        "{err}"
    );
}

/// Deterministic pseudo-random floats (a 32-bit LCG), so values are not all alike.
fn values(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn small_model() -> (Vec<Option<ConvDims>>, Vec<Option<ConvParams>>) {
    let dims = vec![
        Some(ConvDims {
            filters: 4,
            c_in: 3,
            size: 3,
            groups: 1,
            batch_normalize: true,
        }),
        None,
        Some(ConvDims {
            filters: 4,
            c_in: 4,
            size: 3,
            groups: 2,
            batch_normalize: false,
        }),
        Some(ConvDims {
            filters: 2,
            c_in: 4,
            size: 1,
            groups: 1,
            batch_normalize: true,
        }),
    ];
    let params = dims
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.map(|d| {
                let s = i as u32 * 10;
                let bn = |k| d.batch_normalize.then(|| values(s + k, d.filters));
                ConvParams {
                    biases: values(s, d.filters),
                    scales: bn(1),
                    rolling_mean: bn(2),
                    rolling_variance: bn(3),
                    weights: values(s + 4, d.weight_count()),
                }
            })
        })
        .collect();
    (dims, params)
}

#[test]
fn write_then_read_round_trips_values_and_64bit_seen() {
    let (dims, params) = small_model();
    let path = tmp("small.weights");
    let seen = 5_000_000_123u64; // > u32::MAX: must survive as u64
    write_weights(&path, seen, &dims, &params, None).unwrap();
    // 20 + 4*[(16 + 4*3*9) + (4 + 4*2*9) + (8 + 2*4)] = 20 + 4*(124 + 76 + 16)
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 20 + 4 * 216);
    let w = read_weights(&path, &dims, Extent::All).unwrap();
    assert_eq!(
        (w.header.major, w.header.minor, w.header.revision),
        (0, 2, 5)
    );
    assert_eq!(w.header.seen, seen);
    assert_eq!(w.layers, params);
    assert!(!path.with_extension("weights.part").exists());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn old_header_has_32bit_seen() {
    let (dims, params) = small_model();
    let new = encode_weights("x", 0, &dims, &params, None).unwrap();
    // Version 0.1.0: seen is a u32, header 16 bytes.
    let mut old = Vec::new();
    for v in [0i32, 1, 0] {
        old.extend_from_slice(&v.to_le_bytes());
    }
    old.extend_from_slice(&77u32.to_le_bytes());
    old.extend_from_slice(&new[20..]);
    let w = parse_weights(&old, "old.weights", &dims, Extent::All).unwrap();
    assert_eq!(w.header.seen, 77);
    assert_eq!(w.header.byte_len(), 16);
    assert_eq!(w.layers, params);
    // The same body behind a 20-byte 0.1 header is 4 bytes too long.
    let mut bad = new.clone();
    bad[4..8].copy_from_slice(&1i32.to_le_bytes());
    let err = parse_weights(&bad, "bad.weights", &dims, Extent::All).unwrap_err();
    assert!(
        matches!(err, WeightsError::SizeMismatch { header: 16, .. }),
        "{err}"
    );
}

#[test]
fn writer_checks_parameter_lengths() {
    let (dims, mut params) = small_model();
    let mut p = params[2].clone();
    p.as_mut().unwrap().weights.pop();
    params[2] = p;
    let err = encode_weights("w.weights", 0, &dims, &params, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "w.weights: layer 2: weights has 71 values, expected 72"
    ); // 4 · (4/2) · 3 · 3
    let (dims, mut params) = small_model();
    params[3].as_mut().unwrap().scales = None;
    let err = encode_weights("w.weights", 0, &dims, &params, None).unwrap_err();
    assert!(matches!(
        err,
        WeightsError::ParamLength {
            layer: 3,
            what: "scales",
            found: 0,
            expected: 2,
            ..
        }
    ));
    let (dims, mut params) = small_model();
    params[0] = None;
    assert!(matches!(
        encode_weights("w", 0, &dims, &params, None),
        Err(WeightsError::MissingParams { layer: 0, .. })
    ));
    // A cutoff before the missing layer is fine: partial files need only the layers they hold.
    let (dims, mut params) = small_model();
    params[3] = None;
    let bytes = encode_weights("w", 0, &dims, &params, Some(3)).unwrap();
    assert_eq!(bytes.len(), 20 + 4 * (124 + 76));
}

/// A write that fails (here the rename: the target is a non-empty folder; on a full disk, the
/// write) names the file and leaves no `.part` file behind.
#[test]
fn failed_write_leaves_no_temporary_file() {
    let (dims, params) = small_model();
    let target = tmp("blocked.weights");
    std::fs::create_dir_all(target.join("inside")).unwrap();
    let err = write_weights(&target, 0, &dims, &params, None).unwrap_err().to_string();
    assert!(err.contains("blocked.weights"), "{err}");
    assert!(!target.with_extension("weights.part").exists(), "temporary file left behind");
    std::fs::remove_dir_all(&target).unwrap();
}

/// A header that is not Darknet's (major version 99) is refused, not read as weights.
#[test]
fn unknown_major_version_is_refused() {
    let (dims, params) = small_model();
    let mut bytes = encode_weights("x", 0, &dims, &params, None).unwrap();
    bytes[..4].copy_from_slice(&99i32.to_le_bytes());
    match parse_weights(&bytes, "odd.weights", &dims, Extent::All) {
        Err(e @ WeightsError::Version { .. }) => assert!(e.to_string().contains("odd.weights: header says version 99.2.5"), "{e}"),
        other => panic!("expected a version error, got {other:?}"),
    }
}
