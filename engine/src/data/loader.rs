//! Batch order and the prefetching loader.
//!
//! Order (darknet-spec §0): the sample stream is epoch 0's permutation, then epoch 1's, ...;
//! batch `k` takes stream positions `[k·B, (k+1)·B)`, so batches run across epoch boundaries and
//! every image is seen once per epoch. Epoch `e`'s permutation is seeded by (seed, e); the
//! augmentation of an image by (seed, epoch, image index). Every batch is therefore a pure
//! function of (seed, batch index), whatever the number of worker threads. Mosaic/mixup partners
//! come from streams of the same tuple (see [`super::mosaic`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::darknet::{Dataset, Label};
use rand::RngCore;

use super::filters::apply_filters;
use super::image::{Augment, AugmentDraw, Crop, RgbImage, augment_image, below};
use super::mosaic::{MIX_TAG, MixDraw, Source, blend_planar, crop_towards_cut, place_tile};
use super::{DataError, Result, derive_seed};
use crate::rng::{Purpose, stream};

/// When the sample stream ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Whole epochs over the dataset.
    Epochs(u64),
    /// A number of batches (Darknet's `max_batches` when a run gives no epochs); epochs continue
    /// as long as needed.
    Batches(u64),
}

/// What the loader produces.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Network input size.
    pub width: usize,
    pub height: usize,
    /// Truth slots per image (Darknet `max`, 200 by default).
    pub max_boxes: usize,
    pub seed: u64,
    /// `false`: list order every epoch (Darknet fixture case).
    pub shuffle: bool,
    /// Shuffle each image's boxes before keeping `max_boxes` (Darknet's randomize_boxes).
    pub shuffle_boxes: bool,
    pub augment: Augment,
    pub stop: Stop,
    /// With [`Stop::Epochs`]: `true` = the last batch may be short (validation, every image once);
    /// `false` = it is completed from the next epoch's order (training, fixed batch size).
    pub partial_last: bool,
    /// First batch index to produce (resuming a run).
    pub start_batch: u64,
    /// Worker threads; 0 = batches are made on the consumer's thread.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (at least one per worker).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training: shuffled epochs, Darknet augmentation, full batches.
    pub fn training(batch: usize, width: usize, height: usize, seed: u64, augment: Augment, stop: Stop) -> Self {
        LoaderConfig {
            batch,
            width,
            height,
            max_boxes: 200,
            seed,
            shuffle: true,
            shuffle_boxes: true,
            augment,
            stop,
            partial_last: false,
            start_batch: 0,
            workers: 2,
            prefetch: 4,
        }
    }

    /// Validation: one epoch in list order, no augmentation, a short last batch.
    pub fn validation(batch: usize, width: usize, height: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            shuffle_boxes: false,
            partial_last: true,
            ..Self::training(batch, width, height, 0, Augment::NONE, Stop::Epochs(1))
        }
    }
}

/// One batch. Truth layout matches the [yolo] layer: per image `max_boxes` slots of
/// `x, y, w, h, class`, real boxes first, unused slots all 0 (x == 0 ends the list).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[n][3][height][width]`, RGB in [0,1].
    pub images: Vec<f32>,
    /// `[n][max_boxes][5]`.
    pub truths: Vec<f32>,
    pub n: usize,
    pub width: usize,
    pub height: usize,
    pub max_boxes: usize,
    pub paths: Vec<PathBuf>,
    /// Epoch of the batch's first image (0-based).
    pub epoch: u64,
    /// Index of this batch in the run (0-based).
    pub iteration: u64,
}

impl Batch {
    /// The real truth boxes of image `i` (`[x, y, w, h, class]`).
    pub fn boxes(&self, i: usize) -> impl Iterator<Item = &[f32]> {
        let per = self.max_boxes * 5;
        self.truths[i * per..(i + 1) * per].chunks_exact(5).take_while(|t| t[0] != 0.0)
    }
}

/// The pure mapping (seed, batch index) → batch over one dataset.
#[derive(Debug)]
pub struct BatchPlan {
    pub dataset: Arc<Dataset>,
    pub cfg: LoaderConfig,
}

impl BatchPlan {
    pub fn new(dataset: Arc<Dataset>, cfg: LoaderConfig) -> Result<BatchPlan> {
        if cfg.batch == 0 || cfg.width == 0 || cfg.height == 0 || cfg.max_boxes == 0 {
            return Err(DataError::Config("batch, width, height and max_boxes must be at least 1".into()));
        }
        if dataset.is_empty() {
            return Err(DataError::Config(format!("{}: no images", dataset.list.display())));
        }
        Ok(BatchPlan { dataset, cfg })
    }

    /// Total number of batches of the run (including those before `start_batch`).
    pub fn num_batches(&self) -> u64 {
        match self.cfg.stop {
            Stop::Batches(n) => n,
            // Saturating: a caller's absurd epoch count must not wrap to a short run.
            Stop::Epochs(e) => e.saturating_mul(self.dataset.len() as u64).div_ceil(self.cfg.batch as u64),
        }
    }

    /// Images in batch `index` (only the last batch of a `partial_last` run is short).
    pub fn batch_len(&self, index: u64) -> usize {
        let b = self.cfg.batch as u64;
        match self.cfg.stop {
            Stop::Epochs(e) if self.cfg.partial_last => {
                let total = e.saturating_mul(self.dataset.len() as u64);
                total.saturating_sub(index * b).min(b) as usize
            }
            _ => b as usize,
        }
    }

    /// Image order of one epoch: a seeded Fisher–Yates permutation, or list order.
    pub fn permutation(&self, epoch: u64) -> Vec<u32> {
        let n = self.dataset.len();
        let mut p: Vec<u32> = (0..n as u32).collect();
        if self.cfg.shuffle {
            let mut rng = stream(derive_seed(&[self.cfg.seed, epoch]), Purpose::DataOrder);
            for i in (1..n).rev() {
                p.swap(i, below(&mut rng, i + 1));
            }
        }
        p
    }

    /// Makes batch `index`. `cache` keeps the last epoch's permutation between calls.
    pub fn make_batch(&self, index: u64, cache: &mut Option<(u64, Vec<u32>)>) -> Result<Batch> {
        let c = &self.cfg;
        let n = self.batch_len(index);
        let plane = 3 * c.width * c.height;
        let mut images = vec![0f32; n * plane];
        let mut truths = vec![0f32; n * c.max_boxes * 5];
        let mut paths = Vec::with_capacity(n);
        let len = self.dataset.len() as u64;
        let mut first_epoch = 0;
        for slot in 0..n {
            let pos = index * c.batch as u64 + slot as u64;
            let (epoch, k) = (pos / len, (pos % len) as usize);
            if slot == 0 {
                first_epoch = epoch;
            }
            if cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                *cache = Some((epoch, self.permutation(epoch)));
            }
            let image_index = cache.as_ref().map_or(k as u32, |(_, p)| p[k]) as usize;
            let boxes = self.fill_slot(&mut images[slot * plane..(slot + 1) * plane], epoch, image_index)?;
            let t = &mut truths[slot * c.max_boxes * 5..(slot + 1) * c.max_boxes * 5];
            for (dst, b) in t.chunks_exact_mut(5).zip(&boxes) {
                dst.copy_from_slice(b);
            }
            paths.push(self.dataset.samples[image_index].image.clone());
        }
        Ok(Batch {
            images,
            truths,
            n,
            width: c.width,
            height: c.height,
            max_boxes: c.max_boxes,
            paths,
            epoch: first_epoch,
            iteration: index,
        })
    }

    /// Augments one decoded image and its labels, from the stream of (seed, epoch, image)
    /// (without mosaic/mixup, which [`BatchPlan::make_batch`] adds).
    pub fn prepare(&self, img: &RgbImage, labels: &[Label], epoch: u64, image_index: u64) -> (RgbImage, Vec<[f32; 5]>) {
        let mut rng = stream(derive_seed(&[self.cfg.seed, epoch, image_index]), Purpose::Augment);
        let s = self.prepare_source(img, labels, &mut rng, None);
        (s.image, s.boxes)
    }

    /// One image's own augmentation from `rng`: crop/resize/flip/HSV, box shuffle and mapping,
    /// then blur/noise. `to_cut`: the mosaic tile whose cut the crop offsets move towards.
    pub fn prepare_source(&self, img: &RgbImage, labels: &[Label], rng: &mut impl RngCore, to_cut: Option<usize>) -> Source {
        let c = &self.cfg;
        let draw = if c.augment == Augment::NONE {
            AugmentDraw::IDENTITY
        } else {
            c.augment.draw(img.width, img.height, rng)
        };
        let mut crop = Crop::new(&draw, img.width, img.height, c.width, c.height, c.augment.letter_box);
        if let Some(tile) = to_cut {
            crop = crop_towards_cut(&crop, tile);
        }
        let mut out = augment_image(img, &crop, &draw, c.width, c.height);
        let mut labels = labels.to_vec();
        if c.shuffle_boxes {
            for i in (1..labels.len()).rev() {
                labels.swap(i, below(rng, i + 1));
            }
        }
        let boxes = truth_boxes(&labels, &crop, c.width, c.height, c.max_boxes);
        let filters = c.augment.draw_filters(&boxes, c.width, c.height, rng);
        apply_filters(&mut out, &filters, &boxes, rng);
        Source { image: out, boxes, crop }
    }
}

// The one place a batch slot is composed: a plain image, a mosaic or a mixup (mosaic.rs holds
// the pieces and their rules).
impl BatchPlan {
    /// Makes one slot of a batch: its image into `out` (planar `[3][h][w]`) and its truths.
    pub(crate) fn fill_slot(&self, out: &mut [f32], epoch: u64, image_index: usize) -> Result<Vec<[f32; 5]>> {
        let c = &self.cfg;
        let sample = &self.dataset.samples[image_index];
        let img = RgbImage::load(&sample.image)?;
        let mix = if c.augment.combines_images() {
            let mut rng = stream(derive_seed(&[c.seed, epoch, image_index as u64, MIX_TAG]), Purpose::Augment);
            Some(MixDraw::draw(c.width, c.height, self.dataset.len(), &mut rng))
        } else {
            None
        };
        let own_stream = || stream(derive_seed(&[c.seed, epoch, image_index as u64]), Purpose::Augment);
        let partner = |j: usize, tile: Option<usize>| -> Result<Source> {
            let m = mix.as_ref().expect("partners only with a composition");
            let s = &self.dataset.samples[m.partners[j - 1]];
            let img = RgbImage::load(&s.image)?;
            let mut rng = stream(derive_seed(&[c.seed, epoch, image_index as u64, MIX_TAG, j as u64]), Purpose::Augment);
            Ok(self.prepare_source(&img, &s.labels, &mut rng, tile))
        };
        match mix {
            Some(m) if m.apply && c.augment.mosaic => {
                let mut canvas = RgbImage::new(c.width, c.height);
                let mut truths = Vec::new();
                let mut next_partner = 1;
                for tile in 0..4 {
                    let corner = m.to_corner[tile].then_some(tile);
                    let src = if tile == m.own_tile {
                        self.prepare_source(&img, &sample.labels, &mut own_stream(), corner)
                    } else {
                        next_partner += 1;
                        partner(next_partner - 1, corner)?
                    };
                    place_tile(&mut canvas, &src, tile, m.cut_x, m.cut_y, &mut truths);
                }
                canvas.to_planar(out);
                truths.truncate(c.max_boxes);
                Ok(truths)
            }
            Some(m) if m.apply => {
                let own = self.prepare_source(&img, &sample.labels, &mut own_stream(), None);
                let other = partner(1, None)?;
                blend_planar(&own.image, &other.image, out);
                let mut truths = own.boxes;
                truths.extend(other.boxes);
                truths.truncate(c.max_boxes);
                Ok(truths)
            }
            _ => {
                let own = self.prepare_source(&img, &sample.labels, &mut own_stream(), None);
                own.image.to_planar(out);
                Ok(own.boxes)
            }
        }
    }
}

/// Darknet's fill_truth_detection: keep at most `max_boxes` labels, map them through the crop,
/// drop boxes narrower or lower than one network pixel.
pub fn truth_boxes(labels: &[Label], crop: &Crop, net_w: usize, net_h: usize, max_boxes: usize) -> Vec<[f32; 5]> {
    let (lowest_w, lowest_h) = (1.0 / net_w as f32, 1.0 / net_h as f32);
    labels
        .iter()
        .take(max_boxes)
        .filter_map(|l| {
            let [x, y, w, h] = crop.map_box(l);
            (w >= lowest_w && h >= lowest_h).then_some([x, y, w, h, l.class as f32])
        })
        .collect()
}

/// A batch (or the error that ends the run) and how long making it took.
type Slot = (Result<Batch>, Duration);

/// Prefetching loader: `workers` threads make batches ahead of the consumer (worker `w` makes
/// batches `w, w+k, ...`, each into its own bounded channel, so they arrive in order).
pub struct Loader {
    plan: Arc<BatchPlan>,
    receivers: Vec<Receiver<Slot>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: u64,
    end: u64,
    failed: bool,
    sync_cache: Option<(u64, Vec<u32>)>,
    last_wait: Duration,
    total_wait: Duration,
    last_load: Duration,
}

impl Loader {
    pub fn new(dataset: Arc<Dataset>, cfg: LoaderConfig) -> Result<Loader> {
        let plan = Arc::new(BatchPlan::new(dataset, cfg)?);
        let (start, end) = (plan.cfg.start_batch, plan.num_batches());
        let k = plan.cfg.workers;
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(k);
        let mut handles = Vec::with_capacity(k);
        let capacity = plan.cfg.prefetch.div_ceil(k.max(1)).max(1);
        for w in 0..k as u64 {
            let (tx, rx): (SyncSender<Slot>, Receiver<Slot>) = sync_channel(capacity);
            let (plan, stop) = (Arc::clone(&plan), Arc::clone(&stop));
            let handle = std::thread::Builder::new()
                .name(format!("data-loader-{w}"))
                .spawn(move || {
                    let mut cache = None;
                    let mut index = start + w;
                    while index < end && !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let r = plan.make_batch(index, &mut cache);
                        let failed = r.is_err();
                        if tx.send((r, t0.elapsed())).is_err() || failed {
                            break; // consumer gone, or this error ends the run
                        }
                        index += k as u64;
                    }
                })
                .map_err(|e| DataError::Loader(format!("cannot start a worker thread: {e}")))?;
            receivers.push(rx);
            handles.push(handle);
        }
        Ok(Loader {
            plan,
            receivers,
            handles,
            stop,
            next: start,
            end,
            failed: false,
            sync_cache: None,
            last_wait: Duration::ZERO,
            total_wait: Duration::ZERO,
            last_load: Duration::ZERO,
        })
    }

    pub fn plan(&self) -> &BatchPlan {
        &self.plan
    }

    /// Batches still to come.
    pub fn remaining(&self) -> u64 {
        if self.failed { 0 } else { self.end.saturating_sub(self.next) }
    }

    /// How long the consumer waited for the last batch (data-wait).
    pub fn last_wait(&self) -> Duration {
        self.last_wait
    }

    /// How long reading and augmenting the last batch took (in a loader thread, ahead of the
    /// consumer; without threads the same as the wait).
    pub fn last_load(&self) -> Duration {
        self.last_load
    }

    /// Total data-wait so far.
    pub fn total_wait(&self) -> Duration {
        self.total_wait
    }

    /// The next batch; `None` at the end of the run or after an error was returned.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if self.failed || self.next >= self.end {
            return None;
        }
        let t0 = Instant::now();
        let (r, load) = if self.receivers.is_empty() {
            let r = self.plan.make_batch(self.next, &mut self.sync_cache);
            (r, t0.elapsed())
        } else {
            let w = ((self.next - self.plan.cfg.start_batch) % self.receivers.len() as u64) as usize;
            self.receivers[w]
                .recv()
                .unwrap_or_else(|_| (Err(DataError::Loader("a worker thread ended unexpectedly".into())), Duration::ZERO))
        };
        self.last_wait = t0.elapsed();
        self.last_load = load;
        self.total_wait += self.last_wait;
        self.next += 1;
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers makes blocked `send`s fail, so every worker returns.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
