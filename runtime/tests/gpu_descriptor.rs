//! The descriptor plan on the GPU (`shaders/descriptor.wgsl`, `gpu::GpuDescriptor`) against the
//! CPU kernels (`DescriptorModel::describe` / `Plan::run`): bit-identical int8 output on
//! - patches the feature pipeline cuts from the real photos in `assets/photos`,
//! - patches of rendered views (photos warped by the homography benchmark's viewpoint, scale and
//!   rotation changes, with blur and noise),
//! - a synthetic graph that exercises every kernel the shipped model does not (i8 activations,
//!   Relu, MaxPool, grouped, strided and dilated convolutions, a reduction split across
//!   invocations, u8 Relu as a view),
//!
//! with both forms of the packed dot product, batches larger than one submission (4096), and
//! sizes far past llvmpipe's 65,535-iterations-per-invocation cap for a kernel that looped over
//! samples. Without a GPU adapter these tests print `SKIPPED: …` and pass, unless
//! `SEXTANT_REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

use std::error::Error;

use prost::Message;
use sextant_runtime::GrayImage;
use sextant_runtime::descriptor::onnx::{self, data_type};
use sextant_runtime::descriptor::plan::Output;
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, PATCH_PIXELS, Plan, Workspace};
use sextant_runtime::features::homography::{Slice, make_pair};
use sextant_runtime::features::{FeatureConfig, FeatureExtractor};
use sextant_runtime::gpu::{Dot4, GpuDescriptor, GpuError, test_support};

mod common {
    pub mod photos;
}
use common::photos::photo;

type TestResult = Result<(), Box<dyn Error>>;

/// The feature pipeline's patches of `images` (up to `per_image` keypoints each).
fn patches_of(images: &[GrayImage], per_image: usize) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut ex = FeatureExtractor::new(FeatureConfig {
        max_keypoints: per_image,
        ..Default::default()
    })?;
    let mut out = Vec::new();
    for g in images {
        out.extend_from_slice(ex.extract_gray(g)?.patches);
    }
    Ok(out)
}

fn first_difference(gpu: &[i8], cpu: &[i8], dim: usize) -> Option<String> {
    let wrong: Vec<usize> = (0..cpu.len()).filter(|&i| gpu[i] != cpu[i]).collect();
    wrong.first().map(|&i| {
        format!(
            "{} of {} values differ; first: sample {} value {}: gpu {} cpu {}",
            wrong.len(),
            cpu.len(),
            i / dim,
            i % dim,
            gpu[i],
            cpu[i]
        )
    })
}

fn assert_gpu_equals_cpu(
    gpu: &mut GpuDescriptor,
    model: &mut DescriptorModel,
    patches: &[u8],
    what: &str,
) -> TestResult {
    let n = patches.len() / PATCH_PIXELS;
    let mut cpu = vec![0i8; n * DESCRIPTOR_DIM];
    model.describe(patches, n, &mut cpu)?;
    let mut out = vec![0i8; n * DESCRIPTOR_DIM];
    gpu.describe(patches, n, &mut out)?;
    if let Some(d) = first_difference(&out, &cpu, DESCRIPTOR_DIM) {
        panic!("{what} ({n} patches): {d}");
    }
    eprintln!("{what}: {n} descriptors bit-identical");
    Ok(())
}

/// 7 photos × 1000 keypoints: about 7,000 patches, more than one submission (4096), 7 million
/// values in the first layer's output.
#[test]
fn gpu_descriptors_equal_cpu_on_photo_patches() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_descriptors_equal_cpu_on_photo_patches")?
    else {
        return Ok(());
    };
    let names = [
        "astronaut",
        "brick",
        "camera",
        "chelsea",
        "coffee",
        "grass",
        "gravel",
    ];
    let images: Vec<GrayImage> = names.iter().map(|n| photo(n)).collect();
    let patches = patches_of(&images, 1000)?;
    assert!(
        patches.len() / PATCH_PIXELS > 4096,
        "want more than one batch"
    );
    let mut model = DescriptorModel::embedded_default()?;
    let mut gpu = GpuDescriptor::from_model(&ctx, &model)?;
    eprintln!(
        "adapter {}, dot4I8Packed: {}",
        ctx.adapter_info().name,
        gpu.uses_builtin_dot4()
    );
    assert_gpu_equals_cpu(&mut gpu, &mut model, &patches, "photos, dot4 auto")?;

    // The portable dot product gives the same integers.
    let proto = onnx::decode_model(sextant_runtime::descriptor::EMBEDDED_MODEL)?;
    let plan = Plan::compile(&proto)?;
    let mut portable = GpuDescriptor::with_dot4(&ctx, &plan, Dot4::Portable)?;
    assert!(!portable.uses_builtin_dot4());
    let some = &patches[..1500 * PATCH_PIXELS];
    assert_gpu_equals_cpu(&mut portable, &mut model, some, "photos, dot4 portable")?;
    let mut builtin = GpuDescriptor::with_dot4(&ctx, &plan, Dot4::Builtin)?;
    assert_gpu_equals_cpu(&mut builtin, &mut model, some, "photos, dot4 builtin")?;
    Ok(())
}

/// Rendered views: each photo warped by viewpoint, scale and rotation changes (with the
/// benchmark's blur, noise and photometric slices too), described at the runtime's keypoints.
#[test]
fn gpu_descriptors_equal_cpu_on_rendered_views() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_descriptors_equal_cpu_on_rendered_views")?
    else {
        return Ok(());
    };
    let mut views = Vec::new();
    for (i, name) in ["coffee", "gravel", "brick"].iter().enumerate() {
        let a = photo(name);
        for (si, slice) in Slice::ALL.iter().enumerate() {
            views.push(make_pair(&a, *slice, (i + si) % 3, 1.0, 7 + si as u64).image);
        }
    }
    let patches = patches_of(&views, 300)?;
    let mut model = DescriptorModel::embedded_default()?;
    let mut gpu = GpuDescriptor::from_model(&ctx, &model)?;
    assert_gpu_equals_cpu(&mut gpu, &mut model, &patches, "rendered views")?;
    // Extreme patches: flat, saturated, checkerboards, random bytes.
    let mut extreme = Vec::new();
    for fill in [0u8, 255, 128] {
        extreme.extend(std::iter::repeat_n(fill, PATCH_PIXELS));
    }
    for cell in [1usize, 2, 3, 8] {
        extreme.extend((0..PATCH_PIXELS).map(|i| {
            let (x, y) = (i % 32, i / 32);
            if (x / cell + y / cell) % 2 == 0 {
                0
            } else {
                255
            }
        }));
    }
    let mut state = 99u64;
    for _ in 0..64 * PATCH_PIXELS {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        extreme.push((state >> 56) as u8);
    }
    assert_gpu_equals_cpu(&mut gpu, &mut model, &extreme, "extreme patches")?;
    Ok(())
}

/// Buffers are created once: after the largest batch, calls of any size allocate nothing.
#[test]
fn gpu_descriptor_reuses_buffers() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_descriptor_reuses_buffers")? else {
        return Ok(());
    };
    let model = DescriptorModel::embedded_default()?;
    let mut gpu = GpuDescriptor::from_model(&ctx, &model)?;
    let patches: Vec<u8> = (0..300 * PATCH_PIXELS)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut out = vec![0i8; 300 * DESCRIPTOR_DIM];
    gpu.describe(&patches, 300, &mut out)?;
    let warm = gpu.buffer_allocations();
    for n in [1usize, 300, 17, 299, 300] {
        let mut o = vec![0i8; n * DESCRIPTOR_DIM];
        gpu.describe(&patches[..n * PATCH_PIXELS], n, &mut o)?;
        assert_eq!(o[..], out[..n * DESCRIPTOR_DIM], "batch {n}");
    }
    assert_eq!(
        gpu.buffer_allocations(),
        warm,
        "no GPU allocation after warm-up"
    );
    // Bad arguments are errors.
    assert!(matches!(
        gpu.describe(&patches[..10], 1, &mut out[..DESCRIPTOR_DIM]),
        Err(GpuError::InvalidInput { .. })
    ));
    Ok(())
}

/// A lost device is an error value, never a panic.
#[test]
fn gpu_descriptor_device_loss_is_an_error() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_descriptor_device_loss_is_an_error")? else {
        return Ok(());
    };
    let model = DescriptorModel::embedded_default()?;
    let mut gpu = GpuDescriptor::from_model(&ctx, &model)?;
    let patches = vec![77u8; 4 * PATCH_PIXELS];
    let mut out = vec![0i8; 4 * DESCRIPTOR_DIM];
    gpu.describe(&patches, 4, &mut out)?;
    ctx.device().destroy();
    let err = gpu
        .describe(&patches, 4, &mut out)
        .expect_err("a destroyed device cannot describe");
    assert!(matches!(err, GpuError::DeviceLost { .. }), "{err:?}");
    Ok(())
}

// ---- a synthetic graph covering every kernel -------------------------------------------------

fn tensor_i(name: &str, dt: i32, dims: &[i64], data: Vec<i32>) -> onnx::TensorProto {
    onnx::TensorProto {
        name: name.into(),
        data_type: dt,
        dims: dims.to_vec(),
        int32_data: data,
        ..Default::default()
    }
}

fn scalar_f(name: &str, v: f32) -> onnx::TensorProto {
    onnx::TensorProto {
        name: name.into(),
        data_type: data_type::FLOAT,
        float_data: vec![v],
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> onnx::AttributeProto {
    onnx::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<onnx::AttributeProto>,
) -> onnx::NodeProto {
    onnx::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

fn value_info(name: &str, dt: i32, dims: &[i64]) -> onnx::ValueInfoProto {
    let mut dim = vec![onnx::Dimension {
        dim_param: "N".into(),
        ..Default::default()
    }];
    dim.extend(dims.iter().map(|&d| onnx::Dimension {
        dim_value: d,
        ..Default::default()
    }));
    onnx::ValueInfoProto {
        name: name.into(),
        r#type: Some(onnx::TypeProto {
            tensor_type: Some(onnx::TypeProtoTensor {
                elem_type: dt,
                shape: Some(onnx::TensorShapeProto { dim }),
            }),
        }),
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, lo: i32, hi: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + ((self.0 >> 33) % (hi - lo + 1) as u64) as i32
    }
    fn vec(&mut self, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..n).map(|_| self.next(lo, hi)).collect()
    }
}

/// u8 [1,32,32] → conv 5×5 stride 2 pad 2 (i8 out) → Relu (i8) → MaxPool 3×3/2 pad 1 → conv
/// group 2 dilation 2 (i8 in, u8 out) → Relu (u8, a view) → conv 9×9 pad 4, K = 1296 (two
/// reduction splits) → Flatten → QLinearMatMul (i8 out) → fused L2 normalisation (int8, 1/127).
fn synthetic_model() -> Vec<u8> {
    let mut r = Lcg(5);
    let mut init = vec![
        scalar_f("sx", 1.0 / 255.0),
        tensor_i("zu0", data_type::UINT8, &[], vec![0]),
        scalar_f("sw", 0.01),
        tensor_i("zw", data_type::INT8, &[], vec![0]),
        // c1: multiplier ≈ 1e-3 → y scale = sx·sw/1e-3
        scalar_f("s1", 1.0 / 255.0 * 0.01 / 1.3e-3),
        tensor_i("z1", data_type::INT8, &[], vec![3]),
        tensor_i("w1", data_type::INT8, &[16, 1, 5, 5], r.vec(400, -127, 127)),
        tensor_i("b1", data_type::INT32, &[16], r.vec(16, -3000, 3000)),
        scalar_f("s2", 1.0 / 255.0 * 0.01 / 1.3e-3 * 0.01 / 2e-3),
        tensor_i("z2", data_type::UINT8, &[], vec![128]),
        tensor_i(
            "w2",
            data_type::INT8,
            &[16, 8, 3, 3],
            r.vec(16 * 72, -127, 127),
        ),
        scalar_f(
            "s3",
            1.0 / 255.0 * 0.01 / 1.3e-3 * 0.01 / 2e-3 * 0.01 / 4e-4,
        ),
        tensor_i("z3", data_type::UINT8, &[], vec![0]),
        tensor_i(
            "w3",
            data_type::INT8,
            &[8, 16, 9, 9],
            r.vec(8 * 1296, -127, 127),
        ),
        tensor_i("b3", data_type::INT32, &[8], r.vec(8, -20000, 20000)),
        tensor_i(
            "wm",
            data_type::INT8,
            &[512, 64],
            r.vec(512 * 64, -127, 127),
        ),
        scalar_f(
            "sm",
            1.0 / 255.0 * 0.01 / 1.3e-3 * 0.01 / 2e-3 * 0.01 / 4e-4 * 0.01 / 5e-4,
        ),
        tensor_i("zm", data_type::INT8, &[], vec![-5]),
        scalar_f("so", 1.0 / 127.0),
        tensor_i("zo", data_type::INT8, &[], vec![0]),
    ];
    // Give the first layer's s1 the exact reals the later layers refer to.
    init.push(tensor_i("zi8", data_type::INT8, &[], vec![3]));
    let nodes = vec![
        node(
            "QLinearConv",
            &["x", "sx", "zu0", "w1", "sw", "zw", "s1", "z1", "b1"],
            "c1",
            vec![
                ints_attr("strides", &[2, 2]),
                ints_attr("pads", &[2, 2, 2, 2]),
            ],
        ),
        node("Relu", &["c1"], "r1", vec![]),
        node(
            "MaxPool",
            &["r1"],
            "p1",
            vec![
                ints_attr("kernel_shape", &[3, 3]),
                ints_attr("strides", &[2, 2]),
                ints_attr("pads", &[1, 1, 1, 1]),
            ],
        ),
        node(
            "QLinearConv",
            &["p1", "s1", "zi8", "w2", "sw", "zw", "s2", "z2"],
            "c2",
            vec![
                int_attr("group", 2),
                ints_attr("dilations", &[2, 2]),
                ints_attr("pads", &[2, 2, 2, 2]),
            ],
        ),
        node("Relu", &["c2"], "r2", vec![]),
        node(
            "QLinearConv",
            &["r2", "s2", "z2", "w3", "sw", "zw", "s3", "z3", "b3"],
            "c3",
            vec![ints_attr("pads", &[4, 4, 4, 4])],
        ),
        node("Flatten", &["c3"], "f", vec![int_attr("axis", 1)]),
        node(
            "QLinearMatMul",
            &["f", "s3", "z3", "wm", "sw", "zw", "sm", "zm"],
            "m",
            vec![],
        ),
        node("DequantizeLinear", &["m", "sm", "zm"], "dq", vec![]),
        node(
            "LpNormalization",
            &["dq"],
            "l2",
            vec![int_attr("axis", 1), int_attr("p", 2)],
        ),
        node("QuantizeLinear", &["l2", "so", "zo"], "desc", vec![]),
    ];
    let model = onnx::ModelProto {
        ir_version: 7,
        opset_import: vec![onnx::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "gpu_descriptor test".into(),
        graph: Some(onnx::GraphProto {
            node: nodes,
            name: "synthetic".into(),
            initializer: init,
            input: vec![value_info("x", data_type::UINT8, &[1, 32, 32])],
            output: vec![value_info("desc", data_type::INT8, &[64])],
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

#[test]
fn gpu_plan_equals_cpu_on_a_graph_with_every_kernel() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_plan_equals_cpu_on_a_graph_with_every_kernel")?
    else {
        return Ok(());
    };
    let bytes = synthetic_model();
    let plan = Plan::compile(&onnx::decode_model(&bytes)?)?;
    assert_eq!(
        plan.step_names(),
        [
            "qlinear_conv",
            "relu",
            "max_pool",
            "qlinear_conv",
            "relu",
            "qlinear_conv",
            "view",
            "qlinear_matmul",
            "l2_norm_int8"
        ]
    );
    let images = [photo("camera"), photo("grass")];
    let patches = patches_of(&images, 400)?;
    let n = patches.len() / PATCH_PIXELS;
    let mut cpu = vec![0i8; n * 64];
    plan.run(&mut Workspace::default(), &patches, n, Output::I8(&mut cpu))?;
    // Normalised to a gain of 127 over 64 values, outputs span roughly ±60: the graph must not
    // collapse to a few saturated values, and samples must differ.
    let distinct = cpu.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(
        distinct > 40,
        "the synthetic graph saturates ({distinct} distinct values)"
    );
    let rows = cpu
        .chunks_exact(64)
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert!(rows > n / 2, "only {rows} distinct outputs of {n}");
    for dot4 in [Dot4::Builtin, Dot4::Portable] {
        let mut gpu = GpuDescriptor::with_dot4(&ctx, &plan, dot4)?;
        let mut out = vec![0i8; n * 64];
        gpu.describe(&patches, n, &mut out)?;
        if let Some(d) = first_difference(&out, &cpu, 64) {
            panic!("synthetic graph, {dot4:?}: {d}");
        }
    }
    eprintln!("synthetic graph: {n} outputs bit-identical with both dot products");
    Ok(())
}

/// A float step (`QuantizeLinear` outside the fused L2 pattern) is refused, not approximated.
#[test]
fn gpu_refuses_float_steps() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_refuses_float_steps")? else {
        return Ok(());
    };
    let mut proto = onnx::decode_model(&synthetic_model())?;
    let g = proto.graph.as_mut().ok_or("graph")?;
    // LpNormalization with p = 1 breaks the fused pattern: dequantize, lp_norm, quantize in f32.
    for n in &mut g.node {
        if n.op_type == "LpNormalization" {
            n.op_type = "Relu".into();
            n.attribute.clear();
        }
    }
    let plan = Plan::compile(&proto)?;
    match GpuDescriptor::new(&ctx, &plan) {
        Err(GpuError::UnsupportedPlan { reason }) => assert!(reason.contains("float"), "{reason}"),
        other => panic!("expected UnsupportedPlan, got {other:?}"),
    }
    Ok(())
}
