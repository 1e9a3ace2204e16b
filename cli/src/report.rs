//! The localisation report: one self-contained HTML file with the per-slice table and an SVG
//! top-down plot (map landmarks, mapping cameras, ground-truth and estimated query paths).

use crate::eval_localize::{EvalReport, THRESHOLDS};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Plot colours per slice.
const COLOURS: [&str; 7] = [
    "#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#d62728", "#8c564b", "#7f7f7f",
];

/// A top-down SVG plot (x east → right, y north → up).
fn plot(report: &EvalReport) -> String {
    let mut pts: Vec<[f64; 2]> = report.map_xy.clone();
    for s in &report.slices {
        if s.name == "outside" {
            continue;
        }
        for (t, e) in &s.track_xy {
            pts.push(*t);
            if let Some(e) = e {
                pts.push(*e);
            }
        }
    }
    pts.extend(
        report
            .landmarks_xy
            .iter()
            .map(|p| [f64::from(p[0]), f64::from(p[1])]),
    );
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in &pts {
        for k in 0..2 {
            if p[k].is_finite() {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
    }
    if lo[0] > hi[0] {
        return String::new();
    }
    let (w, h, pad) = (720.0, 560.0, 20.0);
    let span = ((hi[0] - lo[0]) / (w - 2.0 * pad)).max((hi[1] - lo[1]) / (h - 2.0 * pad));
    let s = if span > 0.0 { 1.0 / span } else { 1.0 };
    let x = |v: f64| pad + (v - lo[0]) * s;
    let y = |v: f64| h - pad - (v - lo[1]) * s;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" style=\"background:#fafafa;border:1px solid #ccc\">\n"
    );
    for p in &report.landmarks_xy {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"0.8\" fill=\"#bbb\"/>",
            x(f64::from(p[0])),
            y(f64::from(p[1]))
        ));
    }
    svg.push('\n');
    for p in &report.map_xy {
        svg.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"3\" fill=\"#333\"/>",
            x(p[0]) - 1.5,
            y(p[1]) - 1.5
        ));
    }
    svg.push('\n');
    for (k, sl) in report.slices.iter().enumerate() {
        if sl.name == "outside" || sl.track_xy.is_empty() {
            continue;
        }
        let c = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = sl
            .track_xy
            .iter()
            .map(|(t, _)| format!("{:.1},{:.1}", x(t[0]), y(t[1])))
            .collect();
        svg.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" opacity=\"0.6\"/>\n",
            path.join(" ")
        ));
        for (t, e) in &sl.track_xy {
            match e {
                Some(e) => svg.push_str(&format!(
                    "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{c}\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" fill=\"none\" stroke=\"{c}\"/>",
                    x(t[0]), y(t[1]), x(e[0]), y(e[1]), x(e[0]), y(e[1])
                )),
                None => svg.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"{c}\">×</text>",
                    x(t[0]) - 3.0,
                    y(t[1]) + 3.0
                )),
            }
        }
        svg.push('\n');
    }
    svg.push_str("</svg>\n");
    svg
}

/// The report as HTML.
pub fn html(report: &EvalReport, title: &str) -> String {
    let mut h = String::new();
    h.push_str(&format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:2em;max-width:980px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}.key span{{display:inline-block;margin-right:1.2em}}</style></head><body><h1>{t}</h1>\n",
        t = esc(title)
    ));
    h.push_str(&format!(
        "<p>Scene <b>{}</b>: {} mapping frames → {} landmarks, map file {} bytes ({:.1} bytes per landmark), built in {:.1} s.</p>\n",
        esc(&report.scene),
        report.map_frames,
        report.landmarks,
        report.map_bytes,
        report.map_bytes as f64 / report.landmarks.max(1) as f64,
        report.map_build_s
    ));
    h.push_str("<h2>Accuracy and latency per slice</h2>\n<table><tr><th>slice</th><th>mode</th><th>frames</th>");
    for (p, r) in THRESHOLDS {
        h.push_str(&format!("<th>{} cm, {r}°</th>", p * 100.0));
    }
    h.push_str("<th>false fixes</th><th>p50 ms</th><th>p95 ms</th><th>failures</th><th>what it tests</th></tr>\n");
    for s in &report.slices {
        for (mode, st) in [("cold start", &s.cold), ("tracking", &s.tracking)] {
            let fails: Vec<String> = st
                .failures
                .iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect();
            let false_fixes = if s.name == "outside" {
                st.localized
            } else {
                st.false_fixes
            };
            h.push_str(&format!(
                "<tr><td>{}</td><td>{mode}</td><td>{}</td><td>{:.1}%</td><td>{:.1}%</td><td>{:.1}%</td><td>{false_fixes}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>\n",
                esc(&s.name),
                st.frames,
                100.0 * st.recall[0],
                100.0 * st.recall[1],
                100.0 * st.recall[2],
                st.p50_ms,
                st.p95_ms,
                fails.join(", "),
                esc(&s.about)
            ));
        }
    }
    h.push_str("</table>\n<p>Recall: share of all frames whose estimated camera centre and orientation are within the threshold (Aachen Day-Night / Cambridge convention). False fixes: frames answered with a pose that is off by more than 1 m or 5° (for the out-of-map slice, any pose). Latency: wall time of the whole call on one thread.</p>\n");
    h.push_str("<h2>Top-down view</h2>\n<p class=\"key\"><span>grey dots: landmarks</span><span>black squares: mapping cameras</span><span>lines: ground-truth query paths (tracking run); circles: estimates, joined to the true position; ×: no answer</span></p>\n<p class=\"key\">");
    for (k, s) in report.slices.iter().enumerate() {
        if s.name != "outside" {
            h.push_str(&format!(
                "<span style=\"color:{}\">■ {}</span>",
                COLOURS[k % COLOURS.len()],
                esc(&s.name)
            ));
        }
    }
    h.push_str("</p>\n");
    h.push_str(&plot(report));
    h.push_str("</body></html>\n");
    h
}
