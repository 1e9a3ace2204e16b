//! The CPU's direct kernels (small-`Cin` convolution, depthwise convolution, row-wise matrix
//! product) against the generic im2col + GEMM path on random small graphs: every ISA this CPU
//! runs, direct kernels on and off, must give the same bytes — including i8 activations,
//! asymmetric padding, odd widths, strides, huge biases and every requantisation regime.

use proptest::prelude::*;
use prost::Message;
use sextant_runtime::descriptor::onnx::{
    self, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, data_type,
};
use sextant_runtime::descriptor::plan::Output;
use sextant_runtime::descriptor::{DirectKernels, Isa, Plan, Workspace};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn i8(&mut self) -> i8 {
        match self.below(8) {
            0 => -128,
            1 => 127,
            2 => 0,
            _ => self.next() as i8,
        }
    }
}

fn tensor(name: &str, dims: &[usize], dt: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt,
        raw_data: raw,
        ..Default::default()
    }
}

fn f32s(name: &str, v: f32) -> TensorProto {
    tensor(name, &[], data_type::FLOAT, v.to_le_bytes().to_vec())
}

fn zp(name: &str, i8: bool, v: i32) -> TensorProto {
    let dt = if i8 {
        data_type::INT8
    } else {
        data_type::UINT8
    };
    tensor(name, &[], dt, vec![v as u8])
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn value(name: &str, i8: bool, shape: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        dim_param: "N".into(),
        ..Default::default()
    }];
    dim.extend(shape.iter().map(|&d| Dimension {
        dim_value: d as i64,
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: if i8 {
                    data_type::INT8
                } else {
                    data_type::UINT8
                },
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// One QLinearConv layer's description.
#[derive(Debug, Clone)]
struct Conv {
    cin: usize,
    cout: usize,
    group: usize,
    k: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
    /// x_scale · w_scale / y_scale
    real: f32,
    y_i8: bool,
    y_zp: i32,
    bias_big: bool,
}

impl Conv {
    fn out(&self, h: usize, w: usize) -> (usize, usize) {
        (
            (h + self.pads[0] + self.pads[2] - self.k[0]) / self.stride[0] + 1,
            (w + self.pads[1] + self.pads[3] - self.k[1]) / self.stride[1] + 1,
        )
    }
}

/// Appends a QLinearConv reading `x` (element type `x_i8`, zero point `x_zp`).
fn add_conv(
    g: &mut GraphProto,
    r: &mut Rng,
    idx: usize,
    c: &Conv,
    x: &str,
    (x_i8, x_zp): (bool, i32),
) -> String {
    let p = format!("c{idx}_");
    let kk = c.cin / c.group * c.k[0] * c.k[1];
    let w: Vec<u8> = (0..c.cout * kk).map(|_| r.i8() as u8).collect();
    let bias: Vec<u8> = (0..c.cout)
        .flat_map(|_| {
            let b = if c.bias_big {
                (r.next() as i32) / 2
            } else {
                (r.next() % 20001) as i32 - 10000
            };
            b.to_le_bytes()
        })
        .collect();
    g.initializer.extend([
        f32s(&format!("{p}xs"), 0.5),
        zp(&format!("{p}xz"), x_i8, x_zp),
        tensor(
            &format!("{p}w"),
            &[c.cout, c.cin / c.group, c.k[0], c.k[1]],
            data_type::INT8,
            w,
        ),
        f32s(&format!("{p}ws"), 0.25),
        zp(&format!("{p}wz"), true, 0),
        f32s(&format!("{p}ys"), 0.125 / c.real),
        zp(&format!("{p}yz"), c.y_i8, c.y_zp),
        tensor(&format!("{p}b"), &[c.cout], data_type::INT32, bias),
    ]);
    let out = format!("{p}y");
    g.node.push(NodeProto {
        input: std::iter::once(x.to_string())
            .chain(
                ["xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
                    .iter()
                    .map(|s| format!("{p}{s}")),
            )
            .collect(),
        output: vec![out.clone()],
        name: format!("conv{idx}"),
        op_type: "QLinearConv".into(),
        attribute: vec![
            ints("kernel_shape", &[c.k[0] as i64, c.k[1] as i64]),
            ints("strides", &[c.stride[0] as i64, c.stride[1] as i64]),
            ints("pads", &c.pads.map(|v| v as i64)),
            AttributeProto {
                name: "group".into(),
                r#type: 2,
                i: c.group as i64,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    out
}

fn model(g: GraphProto) -> Plan {
    let m = ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(g),
        ..Default::default()
    };
    let proto = onnx::decode_model(&m.encode_to_vec()).expect("decodes");
    Plan::compile(&proto).expect("compiles")
}

/// Runs the plan on every ISA with direct kernels on and off; all outputs must agree with the
/// scalar generic path. Returns the per-step CPU kernel names.
fn check(
    mut plan: Plan,
    input: &[u8],
    n: usize,
    out_len: usize,
    out_i8: bool,
) -> Vec<&'static str> {
    let run = |plan: &Plan| -> Vec<u8> {
        let mut ws = Workspace::default();
        if out_i8 {
            let mut o = vec![0i8; n * out_len];
            plan.run(&mut ws, input, n, Output::I8(&mut o))
                .expect("runs");
            o.iter().map(|&v| v as u8).collect()
        } else {
            let mut o = vec![0u8; n * out_len];
            plan.run(&mut ws, input, n, Output::U8(&mut o))
                .expect("runs");
            o
        }
    };
    plan.set_isa(Isa::Scalar);
    plan.set_direct_kernels(DirectKernels::Never);
    let want = run(&plan);
    for isa in Isa::all_available() {
        for mode in [
            DirectKernels::Never,
            DirectKernels::Always,
            DirectKernels::Auto,
        ] {
            plan.set_isa(isa);
            plan.set_direct_kernels(mode);
            assert_eq!(run(&plan), want, "{} {mode:?}", isa.name());
        }
    }
    plan.set_direct_kernels(DirectKernels::Always);
    plan.cpu_kernel_names()
}

/// Two chained convolutions (the second may read i8) on random input; returns kernel names.
fn conv_pair(
    seed: u64,
    h: usize,
    w: usize,
    a: &Conv,
    b: &Conv,
    x_zp: i32,
    mid_zp: i32,
) -> Vec<&'static str> {
    let mut r = Rng(seed | 1);
    let mut g = GraphProto {
        name: "t".into(),
        ..Default::default()
    };
    let (oh, ow) = a.out(h, w);
    let (oh2, ow2) = b.out(oh, ow);
    g.input.push(value("x", false, &[a.cin, h, w]));
    let mut a = a.clone();
    a.y_zp = if a.y_i8 { mid_zp - 128 } else { mid_zp };
    let y = add_conv(&mut g, &mut r, 0, &a, "x", (false, x_zp));
    let z = add_conv(&mut g, &mut r, 1, b, &y, (a.y_i8, a.y_zp));
    g.output.push(value(&z, b.y_i8, &[b.cout, oh2, ow2]));
    let plan = model(g);
    let n = 3;
    let input: Vec<u8> = (0..n * a.cin * h * w)
        .map(|i| match r.below(10) {
            0 => 0,
            1 => 255,
            _ => (r.next() as u8).wrapping_add(i as u8),
        })
        .collect();
    check(plan, &input, n, b.cout * oh2 * ow2, b.y_i8)
}

fn small_conv(r: &mut Rng, cin: usize, real: f32) -> Conv {
    let k = [1 + r.below(4), 1 + r.below(4)];
    Conv {
        cin,
        cout: 1 + r.below(10),
        group: 1,
        k,
        stride: [1, 1],
        pads: [r.below(k[0]), r.below(k[1]), r.below(k[0]), r.below(k[1])],
        real,
        y_i8: r.below(2) == 0,
        y_zp: 0,
        bias_big: r.below(6) == 0,
    }
}

fn depthwise(r: &mut Rng, c: usize, real: f32) -> Conv {
    let k = [1 + r.below(17), 1 + r.below(16)];
    Conv {
        cin: c,
        cout: c,
        group: c,
        k,
        stride: [1 + r.below(9), 1 + r.below(9)],
        pads: [r.below(k[0]), r.below(k[1]), r.below(k[0]), r.below(k[1])],
        real,
        y_i8: r.below(2) == 0,
        y_zp: if r.below(2) == 0 { 0 } else { 17 },
        bias_big: r.below(6) == 0,
    }
}

/// Requantisation multipliers covering the i32 (powers of two and small odd mantissas), f64
/// and exact 64-bit regimes.
const REALS: [f32; 7] = [0.5, 0.25, 0.375, 1.0 / 3.0, 0.013_7, 3.0e-4, 2.5];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn direct_conv_then_depthwise_equal_generic(seed in any::<u64>(), ri in 0usize..7, rj in 0usize..7, zx in 0i32..256, zm in 0i32..256) {
        let mut r = Rng(seed | 1);
        let cin = 1 + r.below(3);
        let a = small_conv(&mut r, cin, REALS[ri]);
        let (h, w) = (a.k[0] + r.below(37), a.k[1] + r.below(45));
        let (oh, ow) = a.out(h, w);
        let mut b = depthwise(&mut r, a.cout, REALS[rj]);
        b.k = [b.k[0].min(oh), b.k[1].min(ow)];
        b.pads = [b.pads[0].min(b.k[0] - 1), b.pads[1].min(b.k[1] - 1), b.pads[2].min(b.k[0] - 1), b.pads[3].min(b.k[1] - 1)];
        let names = conv_pair(seed, h, w, &a, &b, zx, zm);
        prop_assert_eq!(names[0], "direct_conv");
        // One channel with stride 1 and a narrow kernel is also a small-Cin convolution.
        let small = a.cout == 1 && b.stride == [1, 1] && b.k[1] <= 4;
        prop_assert!(names[1] == "direct_depthwise" || (small && names[1] == "direct_conv"), "{:?}", names);
    }

    #[test]
    fn generic_shapes_still_run_and_agree(seed in any::<u64>(), ri in 0usize..7) {
        // Grouped (not depthwise) and strided small convolutions stay on the generic path.
        let mut r = Rng(seed | 1);
        let mut a = small_conv(&mut r, 2, REALS[ri]);
        a.cout = 2 * (2 + r.below(2));
        a.group = 2;
        let mut b = small_conv(&mut r, a.cout, REALS[(ri + 3) % 7]);
        b.stride = [2, 1 + r.below(2)];
        let (h, w) = (a.k[0] + b.k[0] + r.below(20), a.k[1] + b.k[1] + r.below(20));
        let names = conv_pair(seed, h, w, &a, &b, 3, 200);
        prop_assert_eq!(names[0], "generic");
        prop_assert_eq!(names[1], "generic");
    }
}

#[test]
fn matmul_rows_equal_generic() {
    for (seed, k, ncol, a_i8) in [
        (1u64, 128usize, 64usize, false),
        (2, 5, 3, true),
        (3, 130, 65, false),
        (4, 1, 130, true),
        (5, 64, 8, false),
    ] {
        let mut r = Rng(seed);
        let mut g = GraphProto {
            name: "m".into(),
            ..Default::default()
        };
        // A 1×1 conv makes an (optionally i8) [N, k] activation, then Flatten and MatMul.
        g.input.push(value("x", false, &[k, 1, 1]));
        let c = Conv {
            cin: k,
            cout: k,
            group: k,
            k: [1, 1],
            stride: [1, 1],
            pads: [0; 4],
            real: 0.5,
            y_i8: a_i8,
            y_zp: if a_i8 { -3 } else { 128 },
            bias_big: false,
        };
        let y = add_conv(&mut g, &mut r, 0, &c, "x", (false, 7));
        g.node.push(NodeProto {
            input: vec![y],
            output: vec!["flat".into()],
            name: "flatten".into(),
            op_type: "Flatten".into(),
            ..Default::default()
        });
        let b: Vec<u8> = (0..k * ncol).map(|_| r.i8() as u8).collect();
        g.initializer.extend([
            f32s("as", 0.5),
            zp("az", a_i8, c.y_zp),
            tensor("b", &[k, ncol], data_type::INT8, b),
            f32s("bs", 0.01),
            zp("bz", true, 0),
            f32s("ys", 0.07),
            zp("yz", true, 5),
        ]);
        g.node.push(NodeProto {
            input: ["flat", "as", "az", "b", "bs", "bz", "ys", "yz"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            output: vec!["y".into()],
            name: "mm".into(),
            op_type: "QLinearMatMul".into(),
            ..Default::default()
        });
        g.output.push(value("y", true, &[ncol]));
        let plan = model(g);
        let n = 5;
        let input: Vec<u8> = (0..n * k).map(|_| r.next() as u8).collect();
        let names = check(plan, &input, n, ncol, true);
        assert_eq!(names[2], "row_matmul", "{names:?}");
    }
}

#[test]
fn requantizer_picks_exact_lane_forms() {
    use sextant_runtime::descriptor::kernels::Requant;
    use sextant_runtime::descriptor::kernels::direct::{RequantPath, Requantizer};
    let half = Requant::from_real(0.5).expect("0.5");
    // The shipped gradient layer: multiplier 0.5, small accumulators → a 1-bit i32 shift.
    assert_eq!(
        Requantizer::new(half, 0, false, 9 * 255 * 127).path,
        RequantPath::I32 { mul: 1, shift: 1 }
    );
    let odd = Requant::from_real(0.013_7).expect("odd mantissa");
    assert_eq!(
        Requantizer::new(odd, 128, false, 1 << 20).path,
        RequantPath::F64
    );
    assert_eq!(
        Requantizer::new(odd, 128, false, 1 << 23).path,
        RequantPath::Exact
    );
    // Results that could reach the i32 clamp stay on the exact path.
    let big = Requant::from_real(1000.0).expect("big");
    assert_eq!(
        Requantizer::new(big, 0, true, 1 << 22).path,
        RequantPath::Exact
    );
    // Every lane form gives the same bytes as Requant::apply on its whole accumulator range.
    for (real, bound) in [
        (0.5, 300_000i64),
        (0.375, 1 << 20),
        (0.013_7, 1 << 20),
        (2.5, 1 << 16),
    ] {
        let r = Requant::from_real(real).expect("representable");
        let q = Requantizer::new(r, -3, true, bound);
        let acc: Vec<i32> = (-bound..=bound).step_by(3).map(|a| a as i32).collect();
        let want: Vec<u8> = acc
            .iter()
            .map(|&a| (r.apply(a).saturating_add(-3)).clamp(-128, 127) as i8 as u8)
            .collect();
        assert_eq!(acc.iter().map(|&a| q.byte(a)).collect::<Vec<_>>(), want);
        #[cfg(target_arch = "x86_64")]
        if Isa::Avx2.available() {
            let mut got = vec![0u8; acc.len()];
            // SAFETY: AVX2 presence checked just above.
            unsafe {
                sextant_runtime::descriptor::kernels::x86::requant_row_avx2(&q, &acc, &mut got)
            };
            assert_eq!(got, want, "{real} {:?}", q.path);
        }
    }
}
