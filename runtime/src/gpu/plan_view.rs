//! The compiled descriptor [`Plan`]'s step list, as the GPU executor reads it.
//!
//! `descriptor::plan` keeps its steps private and offers no accessor yet, so this module reads
//! the plan through its derived `Debug` representation — the one public view of every field the
//! compiler resolved (weights, weight sums, biases, fixed-point multipliers, shapes). The text is
//! parsed strictly: a missing or malformed field, an unknown step, or sizes that do not agree is a
//! [`GpuError::UnsupportedPlan`], never a guess, and the GPU parity tests compare every result
//! with [`Plan::run`] bit for bit. When `descriptor::plan` gains a public step accessor, only
//! [`PlanView::of_plan`] changes.

use crate::descriptor::{DescriptorModel, Plan};

use super::GpuError;

/// Element type of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    U8,
    I8,
    F32,
}

/// One tensor slot: element type and elements per sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotView {
    pub ty: Ty,
    pub len: usize,
}

/// A QLinearConv, or a QLinearMatMul expressed as a 1×1 convolution over a 1×1 image with
/// `cin = K` channels (the same GEMM, the same `[sample][out]` layout).
#[derive(Debug, Clone)]
pub(crate) struct GemmView {
    pub src: usize,
    pub dst: usize,
    pub src_i8: bool,
    pub dst_i8: bool,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub group: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub dil: [usize; 2],
    pub oh: usize,
    pub ow: usize,
    /// `[cout][cin/group · kh · kw]`
    pub weights: Vec<i8>,
    pub wsum: Vec<i32>,
    pub bias: Vec<i32>,
    /// Input zero point in the u8 domain.
    pub x_zp: i32,
    pub m0: i32,
    pub shift: u32,
    pub y_zp: i32,
    /// Compiled from a QLinearMatMul (for the step name only).
    pub from_matmul: bool,
}

impl GemmView {
    /// Taps per output value.
    pub fn k(&self) -> usize {
        self.cin / self.group * self.kh * self.kw
    }
}

/// A max-pooling step.
#[derive(Debug, Clone)]
pub(crate) struct PoolView {
    pub src: usize,
    pub dst: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pads: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

/// One step of the plan, in execution order.
#[derive(Debug, Clone)]
pub(crate) enum StepView {
    Gemm(Box<GemmView>),
    Relu {
        src: usize,
        dst: usize,
    },
    View {
        src: usize,
        dst: usize,
    },
    MaxPool(PoolView),
    L2NormQ {
        src: usize,
        dst: usize,
        x_zp: i32,
        gain: u32,
        y_zp: i32,
        d: usize,
    },
    /// A float step (`quantize`, `dequantize`, `lp_norm`): not reproducible bit for bit on a GPU.
    Float(&'static str),
}

/// The whole plan.
#[derive(Debug, Clone)]
pub(crate) struct PlanView {
    pub slots: Vec<SlotView>,
    pub steps: Vec<StepView>,
    pub input: usize,
    pub output: usize,
}

fn bad(reason: impl Into<String>) -> GpuError {
    GpuError::UnsupportedPlan {
        reason: reason.into(),
    }
}

impl PlanView {
    /// Reads a compiled plan.
    pub fn of_plan(plan: &Plan) -> Result<PlanView, GpuError> {
        let text = format!("{plan:?}");
        let value = Parser::new(&text).document()?;
        let view = PlanView::from_value(&value)?;
        let names: Vec<&str> = view.steps.iter().map(StepView::name).collect();
        if names != plan.step_names() {
            return Err(bad(format!(
                "read steps {names:?}, the plan reports {:?}",
                plan.step_names()
            )));
        }
        Ok(view)
    }

    /// Reads the plan of a descriptor model that runs on the int8 kernels.
    pub fn of_model(model: &DescriptorModel) -> Result<PlanView, GpuError> {
        let text = format!("{model:?}");
        let value = Parser::new(&text).document()?;
        let backend = value.field("backend")?;
        match backend {
            Dv::Tuple(name, items) if name == "Kernels" && items.len() == 1 => {
                PlanView::from_value(&items[0])
            }
            _ => Err(bad("the model does not run on the int8 kernels (tract)")),
        }
    }

    fn from_value(v: &Dv) -> Result<PlanView, GpuError> {
        v.expect_struct("Plan")?;
        let slots = v
            .field("slots")?
            .list()?
            .iter()
            .map(|s| {
                Ok(SlotView {
                    ty: ty(s.field("dtype")?)?,
                    len: s.field("len")?.usize()?,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        let steps = v
            .field("steps")?
            .list()?
            .iter()
            .map(step)
            .collect::<Result<Vec<_>, GpuError>>()?;
        let view = PlanView {
            slots,
            steps,
            input: v.field("input")?.usize()?,
            output: v.field("output")?.usize()?,
        };
        view.check()?;
        Ok(view)
    }

    /// Sizes must agree with the slots they read and write.
    fn check(&self) -> Result<(), GpuError> {
        let n = self.slots.len();
        let slot = |i: usize| {
            self.slots
                .get(i)
                .copied()
                .ok_or_else(|| bad(format!("slot {i} of {n}")))
        };
        slot(self.input)?;
        slot(self.output)?;
        for s in &self.steps {
            match s {
                StepView::Gemm(g) => {
                    let k = g.k();
                    let ok = g.group > 0
                        && g.cin % g.group == 0
                        && g.cout % g.group == 0
                        && g.weights.len() == g.cout * k
                        && g.wsum.len() == g.cout
                        && g.bias.len() == g.cout
                        && slot(g.src)?.len == g.cin * g.h * g.w
                        && slot(g.dst)?.len == g.cout * g.oh * g.ow
                        && (slot(g.src)?.ty == Ty::I8) == g.src_i8
                        && (slot(g.dst)?.ty == Ty::I8) == g.dst_i8
                        && (1..=62).contains(&g.shift)
                        && g.m0 >= 1 << 30;
                    if !ok {
                        return Err(bad("a GEMM step's sizes do not agree"));
                    }
                }
                StepView::Relu { src, dst } | StepView::View { src, dst } => {
                    if slot(*src)?.len != slot(*dst)?.len || slot(*src)?.ty != slot(*dst)?.ty {
                        return Err(bad("a copy step's slots differ"));
                    }
                }
                StepView::MaxPool(p) => {
                    if slot(p.src)?.len != p.c * p.h * p.w
                        || slot(p.dst)?.len != p.c * p.oh * p.ow
                        || slot(p.src)?.ty != slot(p.dst)?.ty
                    {
                        return Err(bad("a max-pool step's sizes do not agree"));
                    }
                }
                StepView::L2NormQ { src, dst, d, .. } => {
                    if slot(*src)?.len != *d || slot(*dst)?.len != *d {
                        return Err(bad("an L2 step's sizes do not agree"));
                    }
                }
                StepView::Float(_) => {}
            }
        }
        Ok(())
    }
}

impl StepView {
    /// The name `Plan::step_names` gives the step.
    pub fn name(&self) -> &'static str {
        match self {
            StepView::Gemm(g) if g.from_matmul => "qlinear_matmul",
            StepView::Gemm(_) => "qlinear_conv",
            StepView::Relu { .. } => "relu",
            StepView::View { .. } => "view",
            StepView::MaxPool(_) => "max_pool",
            StepView::L2NormQ { .. } => "l2_norm_int8",
            StepView::Float(name) => name,
        }
    }
}

fn ty(v: &Dv) -> Result<Ty, GpuError> {
    match v.ident()? {
        "U8" => Ok(Ty::U8),
        "I8" => Ok(Ty::I8),
        "F32" => Ok(Ty::F32),
        other => Err(bad(format!("element type {other}"))),
    }
}

fn step(v: &Dv) -> Result<StepView, GpuError> {
    let (name, body): (&str, &Dv) = match v {
        Dv::Tuple(name, items) if items.len() == 1 => (name, &items[0]),
        Dv::Struct(name, _) => (name, v),
        _ => return Err(bad("a step is neither a tuple nor a struct variant")),
    };
    let u = |f: &str| body.field(f)?.usize();
    let i = |f: &str| body.field(f)?.i32();
    Ok(match name {
        "Conv" => {
            body.expect_struct("ConvStep")?;
            let req = body.field("requant")?;
            StepView::Gemm(Box::new(GemmView {
                src: u("src")?,
                dst: u("dst")?,
                src_i8: body.field("src_i8")?.bool()?,
                dst_i8: ty(body.field("dst_dtype")?)? == Ty::I8,
                cin: u("cin")?,
                h: u("h")?,
                w: u("w")?,
                cout: u("cout")?,
                group: u("group")?,
                kh: u("kh")?,
                kw: u("kw")?,
                stride: body.field("stride")?.usizes()?,
                pads: body.field("pads")?.usizes()?,
                dil: body.field("dil")?.usizes()?,
                oh: u("oh")?,
                ow: u("ow")?,
                weights: body.field("weights")?.i8s()?,
                wsum: body.field("wsum")?.i32s()?,
                bias: body.field("bias")?.i32s()?,
                x_zp: i("x_zp")?,
                m0: req.field("m0")?.i32()?,
                shift: req.field("shift")?.u32()?,
                y_zp: i("y_zp")?,
                from_matmul: false,
            }))
        }
        "MatMul" => {
            body.expect_struct("MatMulStep")?;
            let req = body.field("requant")?;
            let k = u("k")?;
            let ncol = u("ncol")?;
            StepView::Gemm(Box::new(GemmView {
                src: u("src")?,
                dst: u("dst")?,
                src_i8: body.field("src_i8")?.bool()?,
                dst_i8: ty(body.field("dst_dtype")?)? == Ty::I8,
                cin: k,
                h: 1,
                w: 1,
                cout: ncol,
                group: 1,
                kh: 1,
                kw: 1,
                stride: [1, 1],
                pads: [0; 4],
                dil: [1, 1],
                oh: 1,
                ow: 1,
                weights: body.field("weights_t")?.i8s()?,
                wsum: body.field("wsum")?.i32s()?,
                bias: vec![0; ncol],
                x_zp: i("a_zp")?,
                m0: req.field("m0")?.i32()?,
                shift: req.field("shift")?.u32()?,
                y_zp: i("y_zp")?,
                from_matmul: true,
            }))
        }
        "Relu" => StepView::Relu {
            src: u("src")?,
            dst: u("dst")?,
        },
        "View" => StepView::View {
            src: u("src")?,
            dst: u("dst")?,
        },
        "MaxPool" => {
            body.expect_struct("PoolStep")?;
            StepView::MaxPool(PoolView {
                src: u("src")?,
                dst: u("dst")?,
                c: u("c")?,
                h: u("h")?,
                w: u("w")?,
                kh: u("kh")?,
                kw: u("kw")?,
                stride: body.field("stride")?.usizes()?,
                pads: body.field("pads")?.usizes()?,
                oh: u("oh")?,
                ow: u("ow")?,
            })
        }
        "L2NormQ" => StepView::L2NormQ {
            src: u("src")?,
            dst: u("dst")?,
            x_zp: i("x_zp")?,
            gain: body.field("gain")?.u32()?,
            y_zp: i("y_zp")?,
            d: u("d")?,
        },
        "Quantize" => StepView::Float("quantize"),
        "Dequantize" => StepView::Float("dequantize"),
        "LpNorm" => StepView::Float("lp_norm"),
        other => return Err(bad(format!("unknown step `{other}`"))),
    })
}

/// A value of Rust's derived `Debug` text.
#[derive(Debug, Clone, PartialEq)]
enum Dv {
    /// A number (or `inf`/`NaN`), kept as text.
    Num(String),
    Str(String),
    /// A unit variant or other bare identifier.
    Ident(String),
    Struct(String, Vec<(String, Dv)>),
    Tuple(String, Vec<Dv>),
    List(Vec<Dv>),
}

impl Dv {
    fn expect_struct(&self, want: &str) -> Result<(), GpuError> {
        match self {
            Dv::Struct(name, _) if name == want => Ok(()),
            _ => Err(bad(format!("expected a `{want}`"))),
        }
    }

    fn field(&self, name: &str) -> Result<&Dv, GpuError> {
        match self {
            Dv::Struct(_, fields) => fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v)
                .ok_or_else(|| bad(format!("no field `{name}`"))),
            _ => Err(bad(format!(
                "field `{name}` of a value that is not a struct"
            ))),
        }
    }

    fn list(&self) -> Result<&[Dv], GpuError> {
        match self {
            Dv::List(items) => Ok(items),
            _ => Err(bad("expected a list")),
        }
    }

    fn ident(&self) -> Result<&str, GpuError> {
        match self {
            Dv::Ident(s) => Ok(s),
            _ => Err(bad("expected an identifier")),
        }
    }

    fn int(&self) -> Result<i64, GpuError> {
        match self {
            Dv::Num(s) => s
                .parse::<i64>()
                .map_err(|_| bad(format!("`{s}` is not an integer"))),
            _ => Err(bad("expected a number")),
        }
    }

    fn usize(&self) -> Result<usize, GpuError> {
        usize::try_from(self.int()?).map_err(|_| bad("expected a non-negative integer"))
    }

    fn u32(&self) -> Result<u32, GpuError> {
        u32::try_from(self.int()?).map_err(|_| bad("expected a u32"))
    }

    fn i32(&self) -> Result<i32, GpuError> {
        i32::try_from(self.int()?).map_err(|_| bad("expected an i32"))
    }

    fn bool(&self) -> Result<bool, GpuError> {
        match self {
            Dv::Ident(s) if s == "true" => Ok(true),
            Dv::Ident(s) if s == "false" => Ok(false),
            _ => Err(bad("expected a bool")),
        }
    }

    fn usizes<const N: usize>(&self) -> Result<[usize; N], GpuError> {
        let items = self.list()?;
        if items.len() != N {
            return Err(bad(format!("expected {N} values")));
        }
        let mut out = [0; N];
        for (o, v) in out.iter_mut().zip(items) {
            *o = v.usize()?;
        }
        Ok(out)
    }

    fn i32s(&self) -> Result<Vec<i32>, GpuError> {
        self.list()?.iter().map(Dv::i32).collect()
    }

    fn i8s(&self) -> Result<Vec<i8>, GpuError> {
        self.list()?
            .iter()
            .map(|v| i8::try_from(v.int()?).map_err(|_| bad("expected an i8")))
            .collect()
    }
}

/// A recursive-descent parser of derived `Debug` output (non-alternate form).
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Parser<'a> {
        Parser {
            s: text.as_bytes(),
            pos: 0,
            depth: 0,
        }
    }

    fn document(&mut self) -> Result<Dv, GpuError> {
        let v = self.value()?;
        self.ws();
        if self.pos != self.s.len() {
            return Err(bad(format!("trailing text at byte {}", self.pos)));
        }
        Ok(v)
    }

    fn ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), GpuError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(bad(format!(
                "expected `{}` at byte {} of the plan text",
                c as char, self.pos
            )))
        }
    }

    fn token(&mut self, pred: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|&c| pred(c)) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn value(&mut self) -> Result<Dv, GpuError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(bad("plan text nested too deeply"));
        }
        let v = self.value_inner();
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self) -> Result<Dv, GpuError> {
        match self.peek() {
            Some(b'[') => {
                self.pos += 1;
                Ok(Dv::List(self.items(b']')?))
            }
            Some(b'(') => {
                // A bare tuple (or `()`).
                self.pos += 1;
                Ok(Dv::Tuple(String::new(), self.items(b')')?))
            }
            Some(b'"') => self.string(),
            Some(b'\'') => {
                // A char literal: skip to the closing quote, escapes included.
                self.pos += 1;
                while let Some(&c) = self.s.get(self.pos) {
                    self.pos += if c == b'\\' { 2 } else { 1 };
                    if c == b'\'' {
                        return Ok(Dv::Ident(String::new()));
                    }
                }
                Err(bad("unterminated char in the plan text"))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => {
                Ok(Dv::Num(self.token(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'_')
                })))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.token(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':');
                match self.peek() {
                    Some(b'{') => {
                        self.pos += 1;
                        let mut fields = Vec::new();
                        if self.peek() == Some(b'}') {
                            self.pos += 1;
                            return Ok(Dv::Struct(name, fields));
                        }
                        loop {
                            self.ws();
                            let key = self.token(|c| c.is_ascii_alphanumeric() || c == b'_');
                            if key.is_empty() {
                                return Err(bad(format!(
                                    "expected a field name at byte {}",
                                    self.pos
                                )));
                            }
                            self.eat(b':')?;
                            let v = self.value()?;
                            fields.push((key, v));
                            match self.peek() {
                                Some(b',') => self.pos += 1,
                                Some(b'}') => {
                                    self.pos += 1;
                                    break;
                                }
                                _ => return Err(bad(format!("bad struct at byte {}", self.pos))),
                            }
                        }
                        Ok(Dv::Struct(name, fields))
                    }
                    Some(b'(') => {
                        self.pos += 1;
                        Ok(Dv::Tuple(name, self.items(b')')?))
                    }
                    _ if name == "inf" || name == "NaN" => Ok(Dv::Num(name)),
                    _ => Ok(Dv::Ident(name)),
                }
            }
            _ => Err(bad(format!("unexpected plan text at byte {}", self.pos))),
        }
    }

    fn items(&mut self, close: u8) -> Result<Vec<Dv>, GpuError> {
        let mut items = Vec::new();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        return Ok(items);
                    }
                }
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(bad(format!("bad list at byte {}", self.pos))),
            }
        }
    }

    fn string(&mut self) -> Result<Dv, GpuError> {
        self.eat(b'"')?;
        let start = self.pos;
        while let Some(&c) = self.s.get(self.pos) {
            match c {
                b'\\' => self.pos += 2,
                b'"' => {
                    let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                    self.pos += 1;
                    return Ok(Dv::Str(text));
                }
                _ => self.pos += 1,
            }
        }
        Err(bad("unterminated string in the plan text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_derived_debug_text() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Inner {
            a: Vec<i8>,
            b: [usize; 2],
        }
        #[derive(Debug)]
        #[allow(dead_code)]
        enum E {
            Unit,
            Tup(Box<Inner>),
            Named {
                x: i32,
                s: String,
                f: f32,
                t: (u8, i8),
                c: char,
                u: (),
                o: Option<u8>,
            },
        }
        let v = vec![
            E::Unit,
            E::Tup(Box::new(Inner {
                a: vec![-1, 2],
                b: [3, 4],
            })),
            E::Named {
                x: -7,
                s: "a \"q\" b".into(),
                f: 1e-7,
                t: (1, -2),
                c: '\'',
                u: (),
                o: Some(3),
            },
        ];
        let text = format!("{v:?}");
        let parsed = Parser::new(&text).document().unwrap();
        let items = parsed.list().unwrap();
        assert_eq!(items[0], Dv::Ident("Unit".into()));
        let Dv::Tuple(name, inner) = &items[1] else {
            panic!("{:?}", items[1]);
        };
        assert_eq!(name, "Tup");
        assert_eq!(inner[0].field("a").unwrap().i8s().unwrap(), vec![-1, 2]);
        assert_eq!(inner[0].field("b").unwrap().usizes::<2>().unwrap(), [3, 4]);
        assert_eq!(items[2].field("x").unwrap().i32().unwrap(), -7);
    }
}
