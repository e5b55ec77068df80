//! Latency distributions as an SVG chart: one cumulative curve per mirror, so the spread of
//! a herd's completion times (not just p50 and p99) is visible at a glance.

/// One curve: a label and its samples (seconds).
pub struct Series {
    pub label: String,
    pub samples: Vec<f64>,
}

impl Series {
    pub fn new(label: impl Into<String>, mut samples: Vec<f64>) -> Series {
        samples.sort_by(f64::total_cmp);
        Series {
            label: label.into(),
            samples,
        }
    }
}

const COLOURS: [&str; 6] = [
    "#1b7837", "#2166ac", "#b2182b", "#e08214", "#762a83", "#4d4d4d",
];
const W: f64 = 760.0;
const PLOT_HEIGHT: f64 = 270.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 40.0;

/// Charts with a shared time axis: the empirical CDF of each series, as stairs.
pub fn cdf_svg(title: &str, series: &[Series]) -> String {
    // Room below the plot for the axis title and one legend line per series.
    let bottom = 60.0 + 16.0 * series.len() as f64;
    let h = TOP + PLOT_HEIGHT + bottom;
    let max = series
        .iter()
        .flat_map(|s| s.samples.last())
        .fold(0.0f64, |a, b| a.max(*b))
        .max(0.001);
    let x = |t: f64| LEFT + t / max * (W - LEFT - RIGHT);
    let y = |q: f64| TOP + (1.0 - q) * PLOT_HEIGHT;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>
"#,
        W / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    for i in 0..=4 {
        let q = f64::from(i) / 4.0;
        svg.push_str(&format!(
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>
"##,
            W - RIGHT,
            LEFT - 6.0,
            y(q) + 4.0,
            q * 100.0,
            y = y(q)
        ));
    }
    for i in 0..=5 {
        let t = max * f64::from(i) / 5.0;
        svg.push_str(&format!(
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{t:.2} s</text>
"##,
            (TOP + PLOT_HEIGHT),
            (TOP + PLOT_HEIGHT) + 16.0,
            x = x(t)
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{}" y="{}" text-anchor="middle">time to complete (s); y: share of clients done</text>
"#,
        W / 2.0,
        (TOP + PLOT_HEIGHT) + 34.0
    ));
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = s.samples.len().max(1) as f64;
        let mut points = format!("{:.1},{:.1}", x(0.0), y(0.0));
        for (k, t) in s.samples.iter().enumerate() {
            points.push_str(&format!(
                " {:.1},{:.1} {:.1},{:.1}",
                x(*t),
                y(k as f64 / n),
                x(*t),
                y((k + 1) as f64 / n)
            ));
        }
        svg.push_str(&format!(
            r#"<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>
<rect x="{LEFT}" y="{ly:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>
"#,
            LEFT + 20.0,
            (TOP + PLOT_HEIGHT) + 54.0 + 16.0 * i as f64,
            escape(&s.label),
            ly = (TOP + PLOT_HEIGHT) + 48.0 + 16.0 * i as f64,
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
