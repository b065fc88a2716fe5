//! The handwritten digits that `smartcore` ships, scaled to [0, 1] and split by class.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::Error;

/// Pixels per image: 8 x 8.
pub const PIXELS: usize = 64;
/// The digits 0 to 9.
pub const CLASSES: usize = 10;
/// The share of each class held out for testing.
pub const TEST_FRACTION: f64 = 0.2;

/// The set's pixel values are integers from 0 to 16.
const MAX_PIXEL: f32 = 16.0;

/// Images as rows of [`PIXELS`] values in [0, 1], with their digits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// Row-major, `labels.len()` rows of [`PIXELS`].
    pub pixels: Vec<f32>,
    /// One digit per row.
    pub labels: Vec<usize>,
}

impl Split {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels and digits of the rows at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> Split {
        let mut pixels = Vec::with_capacity(indices.len() * PIXELS);
        for &row in indices {
            pixels.extend_from_slice(&self.pixels[row * PIXELS..(row + 1) * PIXELS]);
        }
        let labels = indices.iter().map(|&row| self.labels[row]).collect();
        Split { pixels, labels }
    }
}

/// The 1797 images, split into a training and a test set.
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    /// About 80% of each digit's images.
    pub train: Split,
    /// The other 20%.
    pub test: Split,
}

impl Digits {
    /// Loads the set from `smartcore` and splits each digit's images 80/20 in an order
    /// drawn from `seed`, so that both sets keep the digits' proportions.
    ///
    /// # Errors
    /// [`Error::Data`] if the embedded set does not have the shape and labels it should.
    pub fn load(seed: u64) -> Result<Self, Error> {
        let all = load_all()?;
        let mut by_class = vec![Vec::new(); CLASSES];
        for (row, &label) in all.labels.iter().enumerate() {
            by_class[label].push(row);
        }

        let mut rng = StdRng::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for mut rows in by_class {
            rows.shuffle(&mut rng);
            let n_test = (rows.len() as f64 * TEST_FRACTION).round() as usize;
            test.extend_from_slice(&rows[..n_test]);
            train.extend_from_slice(&rows[n_test..]);
        }
        Ok(Digits {
            train: all.gather(&train),
            test: all.gather(&test),
        })
    }
}

fn load_all() -> Result<Split, Error> {
    let set = smartcore::dataset::digits::load_dataset();
    if set.num_features != PIXELS || set.data.len() != set.num_samples * PIXELS {
        return Err(Error::Data(format!(
            "expected rows of {PIXELS} pixels, got {} values for {} rows of {}",
            set.data.len(),
            set.num_samples,
            set.num_features
        )));
    }
    let labels = set
        .target
        .iter()
        .enumerate()
        .map(|(row, &label)| {
            let valid = label >= 0.0 && label < CLASSES as f32 && label.fract() == 0.0;
            if valid {
                Ok(label as usize)
            } else {
                Err(Error::Data(format!(
                    "expected a digit from 0 to 9 at row {row}, got {label}"
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pixels = set.data.iter().map(|&value| value / MAX_PIXEL).collect();
    Ok(Split { pixels, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_stratified_scaled_and_complete() {
        let digits = Digits::load(1).unwrap();
        assert_eq!(digits.train.len() + digits.test.len(), 1797);
        assert_eq!(digits.train.pixels.len(), digits.train.len() * PIXELS);
        let all_pixels = digits.train.pixels.iter().chain(&digits.test.pixels);
        assert!(all_pixels.clone().all(|p| (0.0..=1.0).contains(p)));
        assert!(all_pixels.clone().any(|&p| p == 1.0));

        // Each digit has 174 to 183 images; 20% rounds to 35 to 37 of them.
        for digit in 0..CLASSES {
            let in_test = digits.test.labels.iter().filter(|&&l| l == digit).count();
            assert!(
                (35..=37).contains(&in_test),
                "digit {digit}: {in_test} in test"
            );
        }
    }

    #[test]
    fn the_split_depends_on_the_seed_alone() {
        assert_eq!(Digits::load(3).unwrap(), Digits::load(3).unwrap());
        assert_ne!(Digits::load(3).unwrap().test, Digits::load(4).unwrap().test);
    }
}
