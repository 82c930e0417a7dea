//! Medians with their range, and number formatting for the tables.

use serde_json::{Value, json};

/// Median, min and max of the values that are present.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agg {
    /// Median (mean of the middle two for an even count).
    pub median: Option<f64>,
    /// Smallest.
    pub min: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
    /// Values present.
    pub n: usize,
}

/// Aggregate the present, finite values.
pub fn agg(values: impl IntoIterator<Item = Option<f64>>) -> Agg {
    let mut v: Vec<f64> = values.into_iter().flatten().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Agg::default();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Agg { median: Some(median), min: Some(v[0]), max: Some(v[n - 1]), n }
}

impl Agg {
    /// `{median, min, max, n}`.
    pub fn to_json(self) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "n": self.n })
    }
}

/// A number with precision to suit its size, or `n/a`.
pub fn num(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(0.0) => "0".into(),
        Some(x) if x.abs() < 0.1 => format!("{x:.3}"),
        Some(x) if x.abs() < 10.0 => format!("{x:.2}"),
        Some(x) if x.abs() < 1000.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.0}"),
    }
}

/// The median with the min–max range when there was more than one run.
pub fn med_range(a: Agg) -> String {
    match (a.median, a.min, a.max) {
        (Some(m), Some(lo), Some(hi)) if a.n > 1 && lo != hi => {
            format!("{} ({}–{})", num(Some(m)), num(Some(lo)), num(Some(hi)))
        }
        _ => num(a.median),
    }
}

/// `a / b` when both are present and `b` is positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let a = agg([Some(3.0), None, Some(1.0), Some(2.0)]);
        assert_eq!((a.median, a.min, a.max, a.n), (Some(2.0), Some(1.0), Some(3.0), 3));
        assert_eq!(agg([Some(1.0), Some(2.0)]).median, Some(1.5));
        assert_eq!(agg([None, Some(f64::NAN)]), Agg::default());
        assert_eq!(med_range(agg([Some(1.0), Some(2.0), Some(3.0)])), "2.00 (1.00–3.00)");
    }
}
