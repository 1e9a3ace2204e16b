//! The compact `kind:key=value,key=value` spelling shared by trajectory and photometric options.

use std::collections::BTreeMap;

/// A parsed `kind:key=value,…` string.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValueSpec {
    /// The part before the colon.
    pub kind: String,
    /// The key/value pairs, in key order.
    pub values: BTreeMap<String, String>,
}

impl KeyValueSpec {
    /// Splits `spec`; errors name the offending piece.
    pub fn parse(spec: &str) -> std::result::Result<KeyValueSpec, String> {
        let spec = spec.trim();
        let (kind, rest) = match spec.split_once(':') {
            Some((k, r)) => (k.trim(), r.trim()),
            None => (spec, ""),
        };
        if kind.is_empty() {
            return Err("missing kind before ':'".into());
        }
        let mut values = BTreeMap::new();
        for piece in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = piece
                .split_once('=')
                .ok_or_else(|| format!("{piece:?} is not key=value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(format!("{piece:?} has an empty key or value"));
            }
            if values.insert(k.to_string(), v.to_string()).is_some() {
                return Err(format!("key {k:?} given twice"));
            }
        }
        Ok(KeyValueSpec {
            kind: kind.to_ascii_lowercase(),
            values,
        })
    }

    /// Fails when a key outside `allowed` is present.
    pub fn only(&self, allowed: &[&str]) -> std::result::Result<(), String> {
        for k in self.values.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(format!(
                    "unknown key {k:?} for {} (allowed: {})",
                    self.kind,
                    allowed.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// A finite number, if present.
    pub fn f64(&self, key: &str) -> std::result::Result<Option<f64>, String> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(format!("{key}={v:?} is not a finite number")),
            },
        }
    }

    /// A non-negative integer, if present.
    pub fn u64(&self, key: &str) -> std::result::Result<Option<u64>, String> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{key}={v:?} is not a non-negative integer")),
        }
    }

    /// A list of numbers separated by `sep`, with exactly `n` entries per item when items are
    /// separated by `/` (e.g. `path=1:2/3:4`).
    pub fn points(
        &self,
        key: &str,
        n: usize,
    ) -> std::result::Result<Option<Vec<Vec<f64>>>, String> {
        let Some(v) = self.values.get(key) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for item in v.split('/') {
            let nums: std::result::Result<Vec<f64>, _> =
                item.split(':').map(|x| x.trim().parse::<f64>()).collect();
            match nums {
                Ok(xs) if xs.len() == n && xs.iter().all(|x| x.is_finite()) => out.push(xs),
                _ => {
                    return Err(format!(
                        "{key}: {item:?} is not {n} numbers separated by ':'"
                    ));
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = KeyValueSpec::parse("Orbit:frames=24, radius=4.5,path=1:2/3:4").unwrap();
        assert_eq!(s.kind, "orbit");
        assert_eq!(s.u64("frames").unwrap(), Some(24));
        assert_eq!(s.f64("radius").unwrap(), Some(4.5));
        assert_eq!(
            s.points("path", 2).unwrap(),
            Some(vec![vec![1.0, 2.0], vec![3.0, 4.0]])
        );
        assert!(s.only(&["frames", "radius"]).is_err());
        assert!(KeyValueSpec::parse("orbit:frames").is_err());
        assert!(KeyValueSpec::parse(":frames=2").is_err());
        assert!(KeyValueSpec::parse("a:x=1,x=2").is_err());
        let bad = KeyValueSpec::parse("a:x=nan,n=-1,p=1:2:3").unwrap();
        assert!(bad.f64("x").is_err());
        assert!(bad.u64("n").is_err());
        assert!(bad.points("p", 2).is_err());
    }
}
