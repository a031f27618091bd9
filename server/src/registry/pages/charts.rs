//! Server-side SVG charts for the pages: line charts, grouped bars, histograms and heatmaps, with
//! axes, tick labels, axis titles (with units), legends, and a `<title>` on every mark so values
//! show on hover and reach screen readers. No scripts; colours from one colour-blind-safe palette.

use std::fmt::Write as _;

/// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [&str; 10] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
    "#999999", "#882255",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Escapes text for SVG/HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Round tick values covering [lo, hi] (about `count` of them).
pub fn ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return vec![0.0];
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let raw = (hi - lo) / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut value = first;
    while value <= hi + step * 0.5 && out.len() < 50 {
        out.push(if value.abs() < step * 1e-9 {
            0.0
        } else {
            value
        });
        value += step;
    }
    out
}

fn label(value: f64) -> String {
    if value == 0.0 {
        "0".into()
    } else if value.abs() >= 1e4 || value.abs() < 1e-3 {
        format!("{value:.1e}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A plot area with linear axes.
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        let (lo, hi) = self.x;
        self.left + (x - lo) / (hi - lo).max(f64::EPSILON) * (self.width - self.left - self.right)
    }

    fn py(&self, y: f64) -> f64 {
        let (lo, hi) = self.y;
        self.height
            - self.bottom
            - (y - lo) / (hi - lo).max(f64::EPSILON) * (self.height - self.top - self.bottom)
    }

    /// Opens the SVG and draws axes, grid, ticks and axis titles.
    fn open(
        &self,
        svg: &mut String,
        title: &str,
        x_title: &str,
        y_title: &str,
        x_ticks: &[f64],
        y_ticks: &[f64],
    ) {
        let (w, h) = (self.width, self.height);
        let _ = write!(
            svg,
            r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title><rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>"##,
            t = escape(title)
        );
        let (x0, x1) = (self.left, w - self.right);
        let (y0, y1) = (h - self.bottom, self.top);
        for &t in y_ticks {
            let y = self.py(t);
            let _ = write!(
                svg,
                r##"<line x1="{x0}" x2="{x1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end" class="tick">{l}</text>"##,
                tx = x0 - 6.0,
                ty = y + 4.0,
                l = label(t)
            );
        }
        for &t in x_ticks {
            let x = self.px(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y0}" y2="{y5:.1}" stroke="#333"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" class="tick">{l}</text>"##,
                y5 = y0 + 5.0,
                ty = y0 + 18.0,
                l = label(t)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#333"/><line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="#333"/><text x="{mx:.1}" y="{by:.1}" text-anchor="middle" class="axis-title">{xt}</text><text transform="translate(14 {my:.1}) rotate(-90)" text-anchor="middle" class="axis-title">{yt}</text>"##,
            mx = (x0 + x1) / 2.0,
            by = h - 6.0,
            my = (y0 + y1) / 2.0,
            xt = escape(x_title),
            yt = escape(y_title)
        );
    }
}

/// Draws a legend row above the plot.
fn legend(svg: &mut String, names: &[String], left: f64) {
    let mut x = left;
    for (i, name) in names.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<g class="legend-item"><rect x="{x:.1}" y="8" width="12" height="12" fill="{c}"/><text x="{tx:.1}" y="18" class="legend">{n}</text></g>"#,
            c = colour(i),
            tx = x + 16.0,
            n = escape(name)
        );
        x += 24.0 + 7.0 * name.chars().count() as f64;
    }
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers, a legend and hover values.
pub fn line_chart(title: &str, x_title: &str, y_title: &str, series: &[Series]) -> String {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let (xmin, xmax) = bounds(all.iter().map(|p| p.0));
    let (ymin, ymax) = bounds(all.iter().map(|p| p.1));
    let (mut x_ticks, y_ticks) = (ticks(xmin, xmax, 6), ticks(ymin, ymax, 5));
    // Steps and iterations are whole numbers: no ticks between them.
    if all.iter().all(|p| p.0.fract() == 0.0)
        && x_ticks.iter().filter(|t| t.fract() == 0.0).count() >= 2
    {
        x_ticks.retain(|t| t.fract() == 0.0);
    }
    let frame = Frame {
        width: 640.0,
        height: 320.0,
        left: 64.0,
        right: 16.0,
        top: 32.0,
        bottom: 44.0,
        x: span(&x_ticks),
        y: span(&y_ticks),
    };
    let mut svg = String::new();
    frame.open(&mut svg, title, x_title, y_title, &x_ticks, &y_ticks);
    let names: Vec<String> = series.iter().map(|s| s.name.clone()).collect();
    legend(&mut svg, &names, frame.left);
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", frame.px(x), frame.py(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline class="series" data-series="{n}" fill="none" stroke="{c}" stroke-width="2" points="{p}"/>"#,
            n = escape(&s.name),
            c = colour(i),
            p = points.join(" ")
        );
        if s.points.len() <= 200 {
            for &(x, y) in s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
            {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{n}: {xt} {xl}, {yl}</title></circle>"#,
                    frame.px(x),
                    frame.py(y),
                    c = colour(i),
                    n = escape(&s.name),
                    xt = escape(x_title),
                    xl = label(x),
                    yl = label(y)
                );
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped vertical bars: one group per category, one bar per series.
pub fn bar_chart(
    title: &str,
    categories: &[String],
    y_title: &str,
    series: &[(String, Vec<f64>)],
) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let y_ticks = ticks(0.0, max.max(1.0), 5);
    let n = categories.len().max(1);
    let frame = Frame {
        width: 640.0f64.max(64.0 + 16.0 + 18.0 * n as f64 * series.len().max(1) as f64),
        height: 300.0,
        left: 64.0,
        right: 16.0,
        top: 32.0,
        bottom: 60.0,
        x: (0.0, n as f64),
        y: span(&y_ticks),
    };
    let mut svg = String::new();
    frame.open(&mut svg, title, "class", y_title, &[], &y_ticks);
    let names: Vec<String> = series.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut svg, &names, frame.left);
    let group = frame.px(1.0) - frame.px(0.0);
    let bar = group * 0.8 / series.len().max(1) as f64;
    for (c, category) in categories.iter().enumerate() {
        let x = frame.px(c as f64);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" transform="rotate(-35 {:.1} {:.1})" class="tick">{}</text>"#,
            x + group / 2.0,
            frame.height - frame.bottom + 16.0,
            x + group / 2.0,
            frame.height - frame.bottom + 16.0,
            escape(category)
        );
        for (s, (name, values)) in series.iter().enumerate() {
            let value = values.get(c).copied().unwrap_or(0.0);
            let top = frame.py(value);
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{}"><title>{}, {}: {}</title></rect>"#,
                x + group * 0.1 + bar * s as f64,
                frame.py(frame.y.0) - top,
                colour(s),
                escape(name),
                escape(category),
                label(value)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// Histograms of several samples over shared bins, drawn as outlined steps.
pub fn histogram(
    title: &str,
    x_title: &str,
    samples: &[(String, Vec<f64>)],
    bins: usize,
) -> String {
    let (lo, hi) = bounds(samples.iter().flat_map(|(_, v)| v.iter().copied()));
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let width = (hi - lo) / bins as f64;
    let counts: Vec<Vec<f64>> = samples
        .iter()
        .map(|(_, values)| {
            let mut c = vec![0.0; bins];
            for &v in values.iter().filter(|v| v.is_finite()) {
                let b = (((v - lo) / width) as usize).min(bins - 1);
                c[b] += 1.0;
            }
            c
        })
        .collect();
    let max = counts.iter().flatten().copied().fold(0.0f64, f64::max);
    let (x_ticks, y_ticks) = (ticks(lo, hi, 6), ticks(0.0, max.max(1.0), 5));
    let frame = Frame {
        width: 640.0,
        height: 300.0,
        left: 64.0,
        right: 16.0,
        top: 32.0,
        bottom: 44.0,
        x: (lo.min(x_ticks[0]), hi.max(*x_ticks.last().unwrap_or(&hi))),
        y: span(&y_ticks),
    };
    let mut svg = String::new();
    frame.open(&mut svg, title, x_title, "examples", &x_ticks, &y_ticks);
    let names: Vec<String> = samples.iter().map(|(n, _)| n.clone()).collect();
    legend(&mut svg, &names, frame.left);
    for (s, c) in counts.iter().enumerate() {
        for (b, &count) in c.iter().enumerate() {
            let x0 = frame.px(lo + b as f64 * width);
            let x1 = frame.px(lo + (b + 1) as f64 * width);
            let top = frame.py(count);
            let _ = write!(
                svg,
                r#"<rect class="bin" x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{c}" fill-opacity="0.35" stroke="{c}"><title>{n}: {a}-{z}: {k} examples</title></rect>"#,
                (x1 - x0).max(0.5),
                frame.py(0.0) - top,
                c = colour(s),
                n = escape(&samples[s].0),
                a = label(lo + b as f64 * width),
                z = label(lo + (b + 1) as f64 * width),
                k = count
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A heatmap of `values` (rows x cols, row-major) with labelled axes and a colour scale.
pub fn heatmap(
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[f64],
    row_title: &str,
    col_title: &str,
) -> String {
    let (lo, hi) = bounds(values.iter().copied());
    let cell = (360.0 / cols.len().max(1) as f64).clamp(14.0, 48.0);
    let longest = rows
        .iter()
        .chain(cols)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(1) as f64;
    let left = 40.0 + 7.0 * longest.min(24.0);
    let top = 40.0 + 7.0 * longest.min(24.0);
    let width = left + cell * cols.len() as f64 + 110.0;
    let height = top + cell * rows.len() as f64 + 20.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart heatmap" viewBox="0 0 {width} {height}" role="img" aria-label="{t}"><title>{t}</title><rect width="{width}" height="{height}" fill="#fff"/>"##,
        t = escape(title)
    );
    let shade = |v: f64| {
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
        // White to the palette's blue.
        let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        format!(
            "rgb({},{},{})",
            mix(255.0, 0.0),
            mix(255.0, 114.0),
            mix(255.0, 178.0)
        )
    };
    for (r, row) in rows.iter().enumerate() {
        let y = top + cell * r as f64;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            left - 6.0,
            y + cell / 2.0 + 4.0,
            escape(row)
        );
        for (c, col) in cols.iter().enumerate() {
            let v = values.get(r * cols.len() + c).copied().unwrap_or(f64::NAN);
            let _ = write!(
                svg,
                r##"<rect class="cell" data-row="{r}" data-col="{c}" data-value="{v:.4}" x="{:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}" stroke="#fff"><title>{}: {} / {}: {}, {v:.3}</title></rect>"##,
                left + cell * c as f64,
                shade(v),
                escape(row_title),
                escape(row),
                escape(col_title),
                escape(col)
            );
        }
    }
    for (c, col) in cols.iter().enumerate() {
        let x = left + cell * c as f64 + cell / 2.0;
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="start" transform="rotate(-60 {x:.1} {:.1})" class="tick">{}</text>"#,
            top - 6.0,
            top - 6.0,
            escape(col)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="14" text-anchor="middle" class="axis-title">{}</text><text transform="translate(12 {:.1}) rotate(-90)" text-anchor="middle" class="axis-title">{}</text>"#,
        left + cell * cols.len() as f64 / 2.0,
        escape(col_title),
        top + cell * rows.len() as f64 / 2.0,
        escape(row_title)
    );
    // Colour scale.
    let sx = left + cell * cols.len() as f64 + 24.0;
    let steps = 10;
    for i in 0..steps {
        let v = hi - (hi - lo) * i as f64 / (steps - 1) as f64;
        let _ = write!(
            svg,
            r#"<rect x="{sx:.1}" y="{:.1}" width="16" height="16" fill="{}"/>"#,
            top + 16.0 * i as f64,
            shade(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" class="tick">{}</text><text x="{:.1}" y="{:.1}" class="tick">{}</text></svg>"#,
        sx + 22.0,
        top + 12.0,
        label(hi),
        sx + 22.0,
        top + 16.0 * (steps - 1) as f64 + 12.0,
        label(lo)
    );
    svg
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
        .unwrap_or((0.0, 1.0))
}

fn span(ticks: &[f64]) -> (f64, f64) {
    match (ticks.first(), ticks.last()) {
        (Some(&a), Some(&b)) if b > a => (a, b),
        (Some(&a), _) => (a - 1.0, a + 1.0),
        _ => (0.0, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0, 5),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(0.13, 2.31, 5);
        assert!(t[0] <= 0.13 && *t.last().expect("ticks") >= 2.31);
        assert!(ticks(3.0, 3.0, 5).len() > 1);
    }

    #[test]
    fn text_is_escaped() {
        let svg = heatmap(
            "<script>",
            &["<b>".into()],
            &["a&b".into()],
            &[0.5],
            "row",
            "col",
        );
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
        assert!(svg.contains("&lt;script&gt;") && svg.contains("a&amp;b"));
    }

    #[test]
    fn every_heatmap_cell_has_its_value_on_hover() {
        let names: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
        let values: Vec<f64> = (0..9).map(|i| i as f64 / 10.0).collect();
        let svg = heatmap("blend", &names, &names, &values, "label", "partner");
        assert_eq!(svg.matches("class=\"cell\"").count(), 9);
        assert!(svg.contains("label: c2 / partner: c1, 0.700"));
    }
}
