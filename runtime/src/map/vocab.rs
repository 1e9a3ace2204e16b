//! Visual words for keyframe retrieval: k-means centroids of int8 descriptors, idf weights, and
//! tf-idf vectors (a bag of words, as DBoW/ORB-SLAM retrieve keyframes).

use super::MapError;
use crate::features::matching::{DescriptorSet, MatchConfig, Matcher};
use crate::geometry::rng::Pcg32;

/// Settings of [`Vocabulary::train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VocabularyConfig {
    /// Number of words (clusters).
    pub words: usize,
    /// Lloyd iterations.
    pub iterations: usize,
    /// Most descriptors sampled for training.
    pub sample: usize,
    /// Seed of the sampling and initialisation.
    pub seed: u64,
}

impl Default for VocabularyConfig {
    fn default() -> Self {
        VocabularyConfig {
            words: 256,
            iterations: 8,
            sample: 20_000,
            seed: 1,
        }
    }
}

/// Visual words (int8 centroids) with their idf weights.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocabulary {
    dim: usize,
    words: Vec<i8>,
    idf: Vec<f32>,
}

/// A tf-idf vector over the words, L2-normalised (reused between queries).
pub type BowVector = Vec<f32>;

fn matcher() -> Result<Matcher, MapError> {
    Matcher::new(MatchConfig {
        ratio: 1.0,
        mutual: false,
        max_distance: None,
    })
    .map_err(|e| MapError::Build(e.to_string()))
}

fn set(d: &[i8], dim: usize) -> Result<DescriptorSet<'_>, MapError> {
    DescriptorSet::new(d, dim).map_err(|e| MapError::Build(e.to_string()))
}

impl Vocabulary {
    /// A vocabulary from its parts; `words.len()` must be `idf.len() * dim`.
    pub fn from_parts(dim: usize, words: Vec<i8>, idf: Vec<f32>) -> Result<Vocabulary, MapError> {
        if dim == 0 || words.len() != idf.len() * dim {
            return Err(MapError::Invalid(format!(
                "vocabulary of {} values for {} words of dimension {dim}",
                words.len(),
                idf.len()
            )));
        }
        Ok(Vocabulary { dim, words, idf })
    }

    /// k-means (Lloyd) over a seeded sample of `descriptors`, initialised from distinct sampled
    /// descriptors. Deterministic for given inputs and seed. idf weights start at 1 (see
    /// [`Vocabulary::set_idf`]).
    pub fn train(
        descriptors: &[i8],
        dim: usize,
        config: &VocabularyConfig,
    ) -> Result<Vocabulary, MapError> {
        if dim == 0 || !descriptors.len().is_multiple_of(dim) {
            return Err(MapError::Build(format!(
                "{} descriptor values do not split into dimension {dim}",
                descriptors.len()
            )));
        }
        let n = descriptors.len() / dim;
        if n == 0 || config.words == 0 {
            return Ok(Vocabulary {
                dim,
                words: Vec::new(),
                idf: Vec::new(),
            });
        }
        let mut rng = Pcg32::new(config.seed);
        // Sample without replacement (partial Fisher–Yates over indices).
        let mut idx: Vec<u32> = (0..n as u32).collect();
        let m = n.min(config.sample.max(config.words));
        for i in 0..m {
            let j = i + rng.below((n - i) as u32) as usize;
            idx.swap(i, j);
        }
        idx.truncate(m);
        idx.sort_unstable();
        let mut sample = Vec::with_capacity(m * dim);
        for &i in &idx {
            sample.extend_from_slice(&descriptors[i as usize * dim..(i as usize + 1) * dim]);
        }
        let k = config.words.min(m);
        // Initial centroids: the first k sampled descriptors after a seeded shuffle of the
        // sample order (distinct indices).
        let mut order: Vec<usize> = (0..m).collect();
        for i in 0..k {
            let j = i + rng.below((m - i) as u32) as usize;
            order.swap(i, j);
        }
        let mut words = Vec::with_capacity(k * dim);
        for &i in &order[..k] {
            words.extend_from_slice(&sample[i * dim..(i + 1) * dim]);
        }
        let mut matcher = matcher()?;
        let mut sums = vec![0i64; k * dim];
        let mut counts = vec![0u32; k];
        for _ in 0..config.iterations {
            let best = matcher
                .knn2(&set(&sample, dim)?, &set(&words, dim)?)
                .map_err(|e| MapError::Build(e.to_string()))?;
            sums.fill(0);
            counts.fill(0);
            for (i, b) in best.iter().enumerate() {
                let w = b.best as usize;
                if w >= k {
                    continue;
                }
                counts[w] += 1;
                for (s, &v) in sums[w * dim..(w + 1) * dim]
                    .iter_mut()
                    .zip(&sample[i * dim..(i + 1) * dim])
                {
                    *s += i64::from(v);
                }
            }
            for w in 0..k {
                if counts[w] == 0 {
                    continue; // empty cluster keeps its centroid
                }
                let mean: Vec<f64> = sums[w * dim..(w + 1) * dim]
                    .iter()
                    .map(|&s| s as f64 / f64::from(counts[w]))
                    .collect();
                // Descriptors have norm ≈ 127; keep centroids on that sphere.
                let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
                let scale = if norm > 1e-9 { 127.0 / norm } else { 0.0 };
                for (c, v) in words[w * dim..(w + 1) * dim].iter_mut().zip(&mean) {
                    *c = (v * scale).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        Ok(Vocabulary {
            dim,
            words,
            idf: vec![1.0; k],
        })
    }

    /// Descriptor dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether there are no words.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// The centroids, `dim` values each.
    pub fn words(&self) -> &[i8] {
        &self.words
    }

    /// The idf weights.
    pub fn idf(&self) -> &[f32] {
        &self.idf
    }

    /// Sets idf weights `ln(N / n_w)` from the word lists of `N` documents (keyframes).
    pub fn set_idf<'a>(&mut self, documents: impl IntoIterator<Item = &'a [u32]>) {
        let k = self.len();
        let mut df = vec![0u32; k];
        let mut seen = vec![u32::MAX; k];
        let mut n = 0u32;
        for (d, doc) in documents.into_iter().enumerate() {
            n += 1;
            for &w in doc {
                let w = w as usize;
                if w < k && seen[w] != d as u32 {
                    seen[w] = d as u32;
                    df[w] += 1;
                }
            }
        }
        for (idf, &c) in self.idf.iter_mut().zip(&df) {
            *idf = if c == 0 {
                0.0
            } else {
                (f64::from(n) / f64::from(c)).ln() as f32
            };
        }
    }

    /// The nearest word of each descriptor, into `out`.
    pub fn assign(
        &self,
        matcher: &mut Matcher,
        descriptors: &[i8],
        out: &mut Vec<u32>,
    ) -> Result<(), MapError> {
        out.clear();
        if self.is_empty() || descriptors.is_empty() {
            return Ok(());
        }
        let q = DescriptorSet::new(descriptors, self.dim)
            .map_err(|e| MapError::Build(e.to_string()))?;
        let t = DescriptorSet::new(&self.words, self.dim)
            .map_err(|e| MapError::Build(e.to_string()))?;
        let best = matcher
            .knn2(&q, &t)
            .map_err(|e| MapError::Build(e.to_string()))?;
        out.extend(best.iter().map(|b| b.best));
        Ok(())
    }

    /// The tf-idf vector (L2-normalised) of a word list, into `out`.
    pub fn bow(&self, words: &[u32], out: &mut BowVector) {
        out.clear();
        out.resize(self.len(), 0.0);
        for &w in words {
            if let Some(v) = out.get_mut(w as usize) {
                *v += 1.0;
            }
        }
        let mut norm = 0.0f32;
        for (v, &idf) in out.iter_mut().zip(&self.idf) {
            *v *= idf;
            norm += *v * *v;
        }
        if norm > 0.0 {
            let s = norm.sqrt().recip();
            out.iter_mut().for_each(|v| *v *= s);
        }
    }
}

/// A tf-idf vector stored as bytes (0..=255 for 0..=1).
pub(crate) fn quantize_bow(v: &[f32]) -> Vec<u8> {
    v.iter()
        .map(|&x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Cosine similarity of a query vector with a stored keyframe vector.
pub fn bow_similarity(query: &[f32], stored: &[u8]) -> f32 {
    query
        .iter()
        .zip(stored)
        .map(|(q, &s)| q * f32::from(s))
        .sum::<f32>()
        / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_recovers_separated_clusters_and_is_deterministic() {
        let dim = 32;
        let mut centres = [[0i8; 32]; 3];
        centres[0][0] = 127;
        centres[1][3] = 127;
        centres[2][31] = -127;
        let mut data = Vec::new();
        let mut rng = Pcg32::new(3);
        for i in 0..300 {
            for &c in &centres[i % 3] {
                data.push((i32::from(c) + rng.below(9) as i32 - 4).clamp(-127, 127) as i8);
            }
        }
        let cfg = VocabularyConfig {
            words: 3,
            iterations: 6,
            sample: 1000,
            seed: 5,
        };
        let v = Vocabulary::train(&data, dim, &cfg).expect("train");
        assert_eq!(v, Vocabulary::train(&data, dim, &cfg).expect("train"));
        let mut m = matcher().expect("matcher");
        let mut words = Vec::new();
        v.assign(&mut m, &data, &mut words).expect("assign");
        // Every cluster maps to one word, and the three words differ.
        for c in 0..3 {
            let w: Vec<u32> = words.iter().skip(c).step_by(3).copied().collect();
            assert!(w.iter().all(|&x| x == w[0]), "cluster {c} split: {w:?}");
        }
        assert_ne!(words[0], words[1]);
        assert_ne!(words[1], words[2]);
        assert_ne!(words[0], words[2]);
    }

    #[test]
    fn tf_idf_vectors_are_normalised_and_similarity_peaks_on_itself() {
        let mut v = Vocabulary::from_parts(1, vec![1, 2, 3, 4], vec![1.0; 4]).expect("parts");
        let docs: Vec<Vec<u32>> = vec![vec![0, 1], vec![1, 2, 2], vec![3]];
        v.set_idf(docs.iter().map(|d| d.as_slice()));
        assert!(v.idf()[1] < v.idf()[0]); // word 1 is in two documents
        let mut a = Vec::new();
        v.bow(&docs[1], &mut a);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let stored: Vec<Vec<u8>> = docs
            .iter()
            .map(|d| {
                let mut b = Vec::new();
                v.bow(d, &mut b);
                quantize_bow(&b)
            })
            .collect();
        let s: Vec<f32> = stored.iter().map(|b| bow_similarity(&a, b)).collect();
        assert!(s[1] > 0.99 && s[1] > s[0] && s[2] == 0.0, "{s:?}");
    }
}
