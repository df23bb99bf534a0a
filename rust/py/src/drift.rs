//! Bindings of the drift detectors (`recofast_core::drift`): one class per detector in
//! `recofast._core`, subclassed with documentation by `recofast.drift`. Conversions and
//! error mapping only.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::to_py;
use recofast_core::drift::{Adwin, Ddm, DriftDetector, Eddm, HddmA, HddmW, Kswin, Mode, PageHinkley};

/// A non-negative integer parameter.
fn count(class: &str, name: &str, v: i64) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| PyValueError::new_err(format!("{class}: {name} must be a non-negative integer, got {v}")))
}

/// The values of a stream as f64: a 1-d numpy float64 array is read directly; anything else
/// (a list of floats, ints or bools, an int or bool array) goes through `numpy.asarray`.
fn values(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    if let Ok(a) = obj.cast::<PyArray1<f64>>() {
        let a = a.readonly();
        return Ok(match a.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => a.as_array().iter().copied().collect(),
        });
    }
    let arr = py.import("numpy")?.call_method1("asarray", (obj, "float64"))?;
    let ndim: usize = arr.getattr("ndim")?.extract()?;
    if ndim != 1 {
        return Err(PyValueError::new_err(format!("values must be a 1-dimensional sequence of numbers, got {ndim} dimensions")));
    }
    values(py, &arr)
}

macro_rules! detector {
    ($py:ident, $core:ty, $name:literal, { $($extra:tt)* }) => {
        #[pyclass(name = $name, module = "recofast._core", subclass)]
        pub struct $py {
            d: $core,
        }

        #[pymethods]
        impl $py {
            $($extra)*

            /// Feeds one value; returns whether a drift is detected now.
            fn update(&mut self, x: f64) -> bool {
                self.d.update(x)
            }

            /// Feeds many values in one call (GIL released); returns the int64 indices at
            /// which a drift was detected.
            fn update_many<'py>(&mut self, py: Python<'py>, values: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
                let xs = self::values(py, values)?;
                let d = &mut self.d;
                let hits = py.detach(move || d.update_many(&xs));
                Ok(PyArray1::from_vec(py, hits.into_iter().map(|i| i as i64).collect()))
            }

            /// Forgets everything seen; the parameters stay.
            fn reset(&mut self) {
                self.d.reset();
            }

            /// Whether the last update detected a drift.
            #[getter]
            fn drift_detected(&self) -> bool {
                self.d.drift_detected()
            }

            /// The byte encoding of the parameters and the state.
            fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.d.to_bytes())
            }

            fn __getstate__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
                PyBytes::new(py, &self.d.to_bytes())
            }

            fn __setstate__(&mut self, state: &[u8]) -> PyResult<()> {
                self.d = <$core>::from_bytes(state).map_err(to_py)?;
                Ok(())
            }
        }
    };
}

detector!(PyAdwin, Adwin, "ADWIN", {
    #[new]
    #[pyo3(signature = (delta = 0.002, clock = 32, max_buckets = 5, min_window_length = 5, grace_period = 10))]
    fn new(delta: f64, clock: i64, max_buckets: i64, min_window_length: i64, grace_period: i64) -> PyResult<Self> {
        let d = Adwin::new(
            delta,
            count("ADWIN", "clock", clock)?,
            count("ADWIN", "max_buckets", max_buckets)?,
            count("ADWIN", "min_window_length", min_window_length)?,
            count("ADWIN", "grace_period", grace_period)?,
        )
        .map_err(to_py)?;
        Ok(Self { d })
    }
    #[getter]
    fn delta(&self) -> f64 {
        self.d.delta()
    }
    #[getter]
    fn clock(&self) -> u64 {
        self.d.clock()
    }
    #[getter]
    fn max_buckets(&self) -> u64 {
        self.d.max_buckets()
    }
    #[getter]
    fn min_window_length(&self) -> u64 {
        self.d.min_window_length()
    }
    #[getter]
    fn grace_period(&self) -> u64 {
        self.d.grace_period()
    }
    /// Number of values in the window.
    #[getter]
    fn width(&self) -> u64 {
        self.d.width() as u64
    }
    /// Sum of the values in the window.
    #[getter]
    fn total(&self) -> f64 {
        self.d.total()
    }
    /// The window's sum of squared deviations (River's `variance`).
    #[getter]
    fn variance(&self) -> f64 {
        self.d.variance()
    }
    /// Mean of the window.
    #[getter]
    fn estimation(&self) -> f64 {
        self.d.estimation()
    }
    /// Drifts detected since the last reset.
    #[getter]
    fn n_detections(&self) -> u64 {
        self.d.n_detections()
    }
});

detector!(PyPageHinkley, PageHinkley, "PageHinkley", {
    // alpha: River's `1 - 0.0001`, written as the literal it equals so that it shows in
    // the signature Python reports.
    #[new]
    #[pyo3(signature = (min_instances = 30, delta = 0.005, threshold = 50.0, alpha = 0.9999, mode = "both"))]
    fn new(min_instances: i64, delta: f64, threshold: f64, alpha: f64, mode: &str) -> PyResult<Self> {
        let mode = Mode::parse(mode).map_err(to_py)?;
        let d = PageHinkley::new(count("PageHinkley", "min_instances", min_instances)?, delta, threshold, alpha, mode)
            .map_err(to_py)?;
        Ok(Self { d })
    }
    #[getter]
    fn min_instances(&self) -> u64 {
        self.d.min_instances()
    }
    #[getter]
    fn delta(&self) -> f64 {
        self.d.delta()
    }
    #[getter]
    fn threshold(&self) -> f64 {
        self.d.threshold()
    }
    #[getter]
    fn alpha(&self) -> f64 {
        self.d.alpha()
    }
    #[getter]
    fn mode(&self) -> &'static str {
        self.d.mode().name()
    }
});

detector!(PyDdm, Ddm, "DDM", {
    #[new]
    #[pyo3(signature = (warm_start = 30, warning_threshold = 2.0, drift_threshold = 3.0))]
    fn new(warm_start: i64, warning_threshold: f64, drift_threshold: f64) -> PyResult<Self> {
        let d = Ddm::new(count("DDM", "warm_start", warm_start)?, warning_threshold, drift_threshold).map_err(to_py)?;
        Ok(Self { d })
    }
    /// Whether the last update is in the warning zone.
    #[getter]
    fn warning_detected(&self) -> bool {
        self.d.warning_detected()
    }
    #[getter]
    fn warm_start(&self) -> u64 {
        self.d.warm_start()
    }
    #[getter]
    fn warning_threshold(&self) -> f64 {
        self.d.warning_threshold()
    }
    #[getter]
    fn drift_threshold(&self) -> f64 {
        self.d.drift_threshold()
    }
});

detector!(PyEddm, Eddm, "EDDM", {
    #[new]
    #[pyo3(signature = (warm_start = 30, alpha = 0.95, beta = 0.9))]
    fn new(warm_start: i64, alpha: f64, beta: f64) -> PyResult<Self> {
        let d = Eddm::new(count("EDDM", "warm_start", warm_start)?, alpha, beta).map_err(to_py)?;
        Ok(Self { d })
    }
    /// Whether the last update is in the warning zone.
    #[getter]
    fn warning_detected(&self) -> bool {
        self.d.warning_detected()
    }
    #[getter]
    fn warm_start(&self) -> u64 {
        self.d.warm_start()
    }
    #[getter]
    fn alpha(&self) -> f64 {
        self.d.alpha()
    }
    #[getter]
    fn beta(&self) -> f64 {
        self.d.beta()
    }
});

detector!(PyHddmA, HddmA, "HDDM_A", {
    #[new]
    #[pyo3(signature = (drift_confidence = 0.001, warning_confidence = 0.005, two_sided_test = false))]
    fn new(drift_confidence: f64, warning_confidence: f64, two_sided_test: bool) -> PyResult<Self> {
        let d = HddmA::new(drift_confidence, warning_confidence, two_sided_test).map_err(to_py)?;
        Ok(Self { d })
    }
    /// Whether the last update is in the warning zone.
    #[getter]
    fn warning_detected(&self) -> bool {
        self.d.warning_detected()
    }
    #[getter]
    fn drift_confidence(&self) -> f64 {
        self.d.drift_confidence()
    }
    #[getter]
    fn warning_confidence(&self) -> f64 {
        self.d.warning_confidence()
    }
    #[getter]
    fn two_sided_test(&self) -> bool {
        self.d.two_sided_test()
    }
});

detector!(PyHddmW, HddmW, "HDDM_W", {
    #[new]
    #[pyo3(signature = (drift_confidence = 0.001, warning_confidence = 0.005, lambda_val = 0.05, two_sided_test = false))]
    fn new(drift_confidence: f64, warning_confidence: f64, lambda_val: f64, two_sided_test: bool) -> PyResult<Self> {
        let d = HddmW::new(drift_confidence, warning_confidence, lambda_val, two_sided_test).map_err(to_py)?;
        Ok(Self { d })
    }
    /// Whether the last update is in the warning zone.
    #[getter]
    fn warning_detected(&self) -> bool {
        self.d.warning_detected()
    }
    #[getter]
    fn drift_confidence(&self) -> f64 {
        self.d.drift_confidence()
    }
    #[getter]
    fn warning_confidence(&self) -> f64 {
        self.d.warning_confidence()
    }
    #[getter]
    fn lambda_val(&self) -> f64 {
        self.d.lambda_val()
    }
    #[getter]
    fn two_sided_test(&self) -> bool {
        self.d.two_sided_test()
    }
});

detector!(PyKswin, Kswin, "KSWIN", {
    #[new]
    #[pyo3(signature = (alpha = 0.005, window_size = 100, stat_size = 30, seed = None, window = None))]
    fn new(
        py: Python<'_>,
        alpha: f64,
        window_size: i64,
        stat_size: i64,
        seed: Option<i64>,
        window: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let init = match window.filter(|w| !w.is_none()) {
            Some(w) => values(py, w)?,
            None => Vec::new(),
        };
        let d = Kswin::new(alpha, count("KSWIN", "window_size", window_size)?, count("KSWIN", "stat_size", stat_size)?, seed, &init)
            .map_err(to_py)?;
        Ok(Self { d })
    }
    #[getter]
    fn alpha(&self) -> f64 {
        self.d.alpha()
    }
    #[getter]
    fn window_size(&self) -> u64 {
        self.d.window_size()
    }
    #[getter]
    fn stat_size(&self) -> u64 {
        self.d.stat_size()
    }
    #[getter]
    fn seed(&self) -> Option<i64> {
        self.d.seed()
    }
    /// The p-value of the last Kolmogorov-Smirnov test.
    #[getter]
    fn p_value(&self) -> f64 {
        self.d.p_value()
    }
    /// Values seen since the last reset.
    #[getter]
    fn n(&self) -> u64 {
        self.d.n()
    }
    /// The sliding window, oldest first.
    #[getter]
    fn window(&self) -> Vec<f64> {
        self.d.window()
    }
});

/// Adds the detector classes to `recofast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyAdwin>()?;
    m.add_class::<PyPageHinkley>()?;
    m.add_class::<PyDdm>()?;
    m.add_class::<PyEddm>()?;
    m.add_class::<PyHddmA>()?;
    m.add_class::<PyHddmW>()?;
    m.add_class::<PyKswin>()?;
    m.add("DRIFT_FORMAT_VERSION", recofast_core::drift::FORMAT_VERSION)?;
    Ok(())
}
