//! Median and spread of repeated measurements.
use serde_json::{Value, json};

#[derive(Clone, Debug, Default)]
pub struct Spread {
    pub runs: Vec<f64>,
}

impl Spread {
    pub fn push(&mut self, v: f64) {
        self.runs.push(v);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.runs.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if !n.is_multiple_of(2) => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    /// (max − min) / median, as a fraction.
    pub fn relative_spread(&self) -> f64 {
        let m = self.median();
        if m == 0.0 {
            0.0
        } else {
            (self.max() - self.min()) / m
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "median": self.median(), "min": self.min(), "max": self.max(),
            "relative_spread": self.relative_spread(), "runs": self.runs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_and_spread() {
        let mut s = Spread::default();
        for v in [5.0, 1.0, 3.0] {
            s.push(v);
        }
        assert_eq!(s.median(), 3.0);
        assert_eq!(s.relative_spread(), 4.0 / 3.0);
        s.push(7.0);
        assert_eq!(s.median(), 4.0);
        assert_eq!((s.min(), s.max()), (1.0, 7.0));
        assert_eq!(Spread::default().median(), 0.0);
    }
}
