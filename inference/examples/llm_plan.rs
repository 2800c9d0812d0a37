//! Diagnostic: which matrix products of an LLM decoder's optimized plan pack an operand at run time (an
//! `OptMatMulPack` left in the plan packs a non-constant input every step), and how fast a decode step is.
//!
//! `cargo run --release -p cloister-inference --example llm_plan -- .cache/llm/model.onnx`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::transform::get_transform;

fn main() -> TractResult<()> {
    let path = std::env::args().nth(1).expect("usage: llm_plan MODEL.onnx");
    let mut typed = onnx()
        .model_for_path(&path)?
        .into_typed()?
        .into_decluttered()?;
    get_transform("transformers_detect_all")?
        .expect("tract-transformers linked")
        .transform(&mut typed)?;
    let optimized = typed.into_optimized()?;
    let mut packs = 0;
    for node in optimized.nodes() {
        let op = node.op().name();
        if op.contains("Pack") {
            packs += 1;
            let fact = optimized.outlet_fact(node.inputs[0])?;
            if packs <= 12 {
                println!("{op} {} <- {:?}", node.name, fact.shape);
            }
        }
    }
    let mut ops = std::collections::BTreeMap::<String, usize>::new();
    for node in optimized.nodes() {
        *ops.entry(node.op().name().to_string()).or_default() += 1;
    }
    println!("{packs} run-time pack nodes; ops: {ops:?}");
    let plan = optimized.into_runnable()?;
    let mut state = plan.spawn()?;
    let inputs = plan.model().input_outlets()?.to_vec();
    let names: Vec<String> = inputs
        .iter()
        .map(|o| plan.model().node(o.node).name.clone())
        .collect();
    println!("inputs: {names:?}");
    let step = |state: &mut TypedSimpleState, ids: &[i64], start: usize| -> TractResult<f64> {
        let s = ids.len();
        let total = start + s;
        let mut values = TVec::new();
        for n in &names {
            let t: Tensor = match n.as_str() {
                "input_ids" => tract_ndarray::Array2::from_shape_vec((1, s), ids.to_vec())?.into(),
                "attention_mask" => tract_ndarray::Array2::<i64>::ones((1, total)).into(),
                "position_ids" => {
                    tract_ndarray::Array2::from_shape_fn((1, s), |(_, j)| (start + j) as i64).into()
                }
                other => panic!("input {other}"),
            };
            values.push(t.into_tvalue());
        }
        let t0 = Instant::now();
        state.run(values)?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    };
    let prompt: Vec<i64> = (1..48).collect();
    let first = step(&mut state, &prompt, 0)?;
    let mut times = vec![];
    for i in 0..64 {
        times.push(step(&mut state, &[100 + i as i64], prompt.len() + i)?);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "prompt {first:.1} ms; decode median {:.1} ms, min {:.1}, max {:.1}",
        times[32], times[0], times[63]
    );
    Ok(())
}
