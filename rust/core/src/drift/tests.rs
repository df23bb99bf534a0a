//! Unit tests of the drift detectors. Exact parity with River is tested from Python
//! (`tests/test_drift.py`), which runs River itself.

use super::*;

/// A deterministic stream (xorshift) of values in [0, 1), with `shift` added from `at` on.
fn stream(n: usize, at: usize, shift: f64, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            u + if i >= at { shift } else { 0.0 }
        })
        .collect()
}

/// 0/1 errors with probability `p0` before `at`, `p1` after.
fn bits(n: usize, at: usize, p0: f64, p1: f64, seed: u64) -> Vec<f64> {
    stream(n, usize::MAX, 0.0, seed)
        .into_iter()
        .enumerate()
        .map(|(i, u)| if u < if i < at { p0 } else { p1 } { 1.0 } else { 0.0 })
        .collect()
}

/// A detector factory and a stream it should find a drift in.
type Case = (Box<dyn FnMut() -> Box<dyn Dyn>>, Vec<f64>);

fn all_detectors() -> Vec<Case> {
    vec![
        (Box::new(|| Box::new(Adwin::default()) as Box<dyn Dyn>), stream(5000, 2500, 0.8, 1)),
        (Box::new(|| Box::new(PageHinkley::default()) as Box<dyn Dyn>), stream(5000, 2500, 5.0, 2)),
        (Box::new(|| Box::new(Ddm::default()) as Box<dyn Dyn>), bits(5000, 2500, 0.1, 0.6, 3)),
        (Box::new(|| Box::new(Eddm::default()) as Box<dyn Dyn>), bits(5000, 2500, 0.1, 0.6, 4)),
        (Box::new(|| Box::new(HddmA::default()) as Box<dyn Dyn>), bits(5000, 2500, 0.1, 0.6, 5)),
        (Box::new(|| Box::new(HddmW::default()) as Box<dyn Dyn>), bits(5000, 2500, 0.1, 0.6, 6)),
        (Box::new(|| Box::new(Kswin::new(0.005, 100, 30, Some(42), &[]).unwrap()) as Box<dyn Dyn>), stream(5000, 2500, 0.8, 7)),
    ]
}

/// Object-safe view of a detector for the table-driven tests.
trait Dyn {
    fn upd(&mut self, x: f64) -> bool;
    fn many(&mut self, xs: &[f64]) -> Vec<usize>;
    fn bytes(&self) -> Vec<u8>;
    fn restore(&self, b: &[u8]) -> crate::Result<Box<dyn Dyn>>;
    fn clear(&mut self);
}

impl<T: DriftDetector + 'static> Dyn for T {
    fn upd(&mut self, x: f64) -> bool {
        self.update(x)
    }
    fn many(&mut self, xs: &[f64]) -> Vec<usize> {
        self.update_many(xs)
    }
    fn bytes(&self) -> Vec<u8> {
        self.to_bytes()
    }
    fn restore(&self, b: &[u8]) -> crate::Result<Box<dyn Dyn>> {
        Ok(Box::new(T::from_bytes(b)?))
    }
    fn clear(&mut self) {
        self.reset()
    }
}

#[test]
fn every_detector_sees_an_abrupt_shift() {
    for (mut make, xs) in all_detectors() {
        let hits = make().many(&xs);
        assert!(!hits.is_empty(), "no drift found");
        assert!(hits.iter().any(|&i| i >= 2500), "{hits:?}");
    }
}

#[test]
fn update_many_equals_a_loop_of_update() {
    for (mut make, xs) in all_detectors() {
        let mut d = make();
        let looped: Vec<usize> = xs.iter().enumerate().filter(|(_, &x)| d.upd(x)).map(|(i, _)| i).collect();
        assert_eq!(make().many(&xs), looped);
    }
}

#[test]
fn bytes_round_trip_mid_stream_continues_identically() {
    for (mut make, xs) in all_detectors() {
        let mut a = make();
        let first = a.many(&xs[..2600]);
        let mut b = a.restore(&a.bytes()).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_eq!(a.many(&xs[2600..]), b.many(&xs[2600..]));
        let _ = first;
    }
}

#[test]
fn reset_forgets_everything() {
    for (mut make, xs) in all_detectors() {
        let mut a = make();
        a.many(&xs);
        a.clear();
        assert_eq!(a.bytes(), make().bytes());
        assert_eq!(a.many(&xs), make().many(&xs));
    }
}

#[test]
fn corrupt_bytes_are_errors_never_panics() {
    for (mut make, xs) in all_detectors() {
        let mut a = make();
        a.many(&xs[..1000]);
        let good = a.bytes();
        for cut in 0..good.len() {
            assert!(a.restore(&good[..cut]).is_err(), "truncation at {cut} accepted");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(a.restore(&long).is_err());
        let mut wrong_version = good.clone();
        wrong_version[0] = 99;
        assert!(a.restore(&wrong_version).is_err());
        // Flipped bytes are either refused or give a detector that still runs without panicking.
        // Every byte of the small encodings; about 400 positions of KSWIN's larger one.
        for i in (0..good.len()).step_by(1 + good.len() / 400) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= flip;
                if let Ok(mut d) = a.restore(&b) {
                    d.many(&xs[1000..1100]);
                }
            }
        }
    }
}

#[test]
fn non_finite_input_never_panics_and_reset_recovers() {
    for (mut make, xs) in all_detectors() {
        let mut d = make();
        d.many(&xs[..100]);
        d.many(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308, 2.0, -3.0]);
        d.many(&xs[100..600]);
        d.clear();
        assert_eq!(d.many(&xs), make().many(&xs));
    }
}

#[test]
fn adwin_small_max_buckets_never_panics() {
    for mb in 1..4 {
        let mut a = Adwin::new(0.1, 1, mb, 1, 0).unwrap();
        let xs = stream(20_000, 0, 0.0, 9);
        let ys: Vec<f64> = xs.iter().enumerate().map(|(i, x)| x + if (i / 300) % 2 == 1 { 3.0 } else { 0.0 }).collect();
        assert!(!a.update_many(&ys).is_empty());
    }
}

#[test]
fn adwin_window_statistics() {
    let mut a = Adwin::default();
    for v in [1.0, 2.0, 3.0, 4.0, 5.0] {
        a.update(v);
    }
    assert_eq!(a.width(), 5.0);
    assert_eq!(a.total(), 15.0);
    assert_eq!(a.variance(), 10.0);
    assert_eq!(a.estimation(), 3.0);
    for _ in 0..5000 {
        assert!(!a.update(1.0) || a.n_detections() > 0);
    }
}

#[test]
fn bad_parameters_are_refused() {
    assert!(Adwin::new(0.0, 32, 5, 5, 10).is_err());
    assert!(Adwin::new(f64::NAN, 32, 5, 5, 10).is_err());
    assert!(Adwin::new(0.002, 0, 5, 5, 10).is_err());
    assert!(Adwin::new(0.002, 32, 0, 5, 10).is_err());
    assert!(Adwin::new(0.002, 32, 5, 0, 10).is_err());
    assert!(PageHinkley::new(30, f64::NAN, 50.0, 0.9999, Mode::Both).is_err());
    assert!(PageHinkley::new(30, 0.005, -1.0, 0.9999, Mode::Both).is_err());
    assert!(PageHinkley::new(30, 0.005, 50.0, 1.5, Mode::Both).is_err());
    assert!(Mode::parse("sideways").is_err());
    assert!(Ddm::new(30, f64::INFINITY, 3.0).is_err());
    assert!(Eddm::new(30, 0.8, 0.9).is_err());
    assert!(HddmA::new(0.0, 0.005, false).is_err());
    assert!(HddmA::new(0.001, 1.0, false).is_err());
    assert!(HddmW::new(0.001, 0.005, 0.0, false).is_err());
}

#[test]
fn py_pow_is_the_c_library_pow() {
    // 1 - 0.05 squared: glibc's pow and x * x agree here, but py_pow must never be folded
    // into a multiplication; this checks the value is pow's.
    let x = 0.95f64;
    assert_eq!(py_pow(x, 2.0), x.powf(std::hint::black_box(2.0)));
    assert_eq!(py_pow(4.0, 0.5), 2.0);
}
