"""ONNX sequences of a length known at import are unrolled into tensors
(accelir/frontends/onnx/sequence.py; Loop and If carrying them in control_flow.py): each model
is run through accelir's interpreter and its lowerings (onnxruntime, XLA), against onnx's
ReferenceEvaluator (numpy where that evaluator mishandles a loop-carried sequence) and
onnxruntime on the original.  What cannot be unrolled is refused at the node, saying why."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelir.errors import AccelirError, UnsupportedOpError
from accelir.frontends.onnx import DynamicValueError, OnnxImportError, import_onnx
from accelir.interpreter import run_graph
from accelir.testing import assert_close, import_and_run, onnxruntime_outputs, reference_outputs

F32, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, elem=F32, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _seq_vi(name, elem=F32):
    return helper.make_tensor_sequence_value_info(name, elem, None)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def _lowered(model, feeds):
    from accelir.lowering.onnx import to_onnx
    g = import_onnx(model)
    lowered = to_onnx(g)
    return onnxruntime_outputs(lowered, dict(zip([i.name for i in lowered.graph.input],
                                                 g.meta["signature"].flatten(feeds))))


def check(model, feeds, want=None):
    """accelir's interpreter and its lowerings (onnxruntime, XLA) against onnxruntime on the original
    and ``want``: onnx's ReferenceEvaluator unless given."""
    from accelir.lowering.jax import to_jax
    want = reference_outputs(model, feeds) if want is None else want
    assert_close(onnxruntime_outputs(model, feeds), want, err_msg="onnxruntime alone")
    g, ours = import_and_run(model, feeds)
    assert_close(ours, want, err_msg="interpreter")
    assert_close(_lowered(model, feeds), want, err_msg="accelir -> onnxruntime")
    assert_close([np.asarray(o) for o in to_jax(g)(*g.meta["signature"].flatten(feeds))], want,
                 err_msg="accelir -> XLA")


def _feeds(seed=0, **shapes):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_construct_at_length_and_concat():
    nodes = [helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s"]),
             helper.make_node("SequenceAt", ["s", "minus1"], ["last"]),
             helper.make_node("SequenceAt", ["s", "one"], ["second"]),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("ConcatFromSequence", ["s"], ["cat"], axis=1),
             helper.make_node("ConcatFromSequence", ["s"], ["stacked"], axis=-1, new_axis=1)]
    m = _model(nodes, [_vi("a", F32, [2, 3]), _vi("b", F32, [2, 3]), _vi("c", F32, [2, 3])],
               [_vi("last"), _vi("second"), _vi("n", I64), _vi("cat"), _vi("stacked")],
               [_i64("minus1", -1), _i64("one", 1)])
    check(m, _feeds(a=(2, 3), b=(2, 3), c=(2, 3)))


def test_empty_then_insert_and_erase_chain():
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=F32),
             helper.make_node("SequenceInsert", ["s0", "a"], ["s1"]),           # [a]
             helper.make_node("SequenceInsert", ["s1", "b", "zero"], ["s2"]),   # [b, a]
             helper.make_node("SequenceInsert", ["s2", "c", "minus1"], ["s3"]),  # [b, c, a]
             helper.make_node("SequenceInsert", ["s3", "a"], ["s4"]),           # [b, c, a, a]
             helper.make_node("SequenceErase", ["s4", "one"], ["s5"]),          # [b, a, a]
             helper.make_node("SequenceErase", ["s5"], ["s6"]),                 # [b, a]
             helper.make_node("ConcatFromSequence", ["s6"], ["y"], axis=0),
             helper.make_node("ConcatFromSequence", ["s3"], ["z"], axis=0),
             helper.make_node("SequenceLength", ["s5"], ["n"])]
    m = _model(nodes, [_vi("a", F32, [1, 4]), _vi("b", F32, [2, 4]), _vi("c", F32, [3, 4])],
               [_vi("y"), _vi("z"), _vi("n", I64)], [_i64("zero", 0), _i64("one", 1), _i64("minus1", -1)])
    check(m, _feeds(a=(1, 4), b=(2, 4), c=(3, 4)))


@pytest.mark.parametrize("split, keepdims", [(None, 1), (None, 0), (2, 1), ([1, 3, 1], 1)])
def test_split_to_sequence(split, keepdims):
    inits = [] if split is None else [_i64("split", split)]
    ins = ["x"] + ([] if split is None else ["split"])
    nodes = [helper.make_node("SplitToSequence", ins, ["s"], axis=1, keepdims=keepdims),
             helper.make_node("SequenceAt", ["s", "minus1"], ["last"]),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0, new_axis=1)
             if keepdims == 0 else helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1)]
    m = _model(nodes, [_vi("x", F32, [3, 5])], [_vi("last"), _vi("n", I64), _vi("y")],
               inits + [_i64("minus1", -1)])
    check(m, _feeds(x=(3, 5)))


def test_split_to_sequence_by_run_time_sizes():
    """Sizes fed at run time, their count fixed by the split's shape: the items' extents are
    data-dependent, the sequence's length is not."""
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["s"], axis=0),
             helper.make_node("SequenceAt", ["s", "one"], ["mid"]),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)]
    m = _model(nodes, [_vi("x", F32, [6, 2]), _vi("split", I64, [3])], [_vi("mid"), _vi("y")], [_i64("one", 1)])
    feeds = {**_feeds(x=(6, 2)), "split": np.array([1, 2, 3], np.int64)}
    want = reference_outputs(m, feeds)
    assert_close(_lowered(m, feeds), want)
    assert_close(import_and_run(m, feeds)[1], want)


def test_sequence_map_applies_its_body_item_by_item():
    body = helper.make_graph([helper.make_node("Mul", ["item", "w"], ["out"])], "body",
                             [_vi("item", F32, [2, 1]), _vi("w", F32, [2, 1])], [_vi("out", F32, [2, 1])])
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=1),
             helper.make_node("SequenceMap", ["s", "w"], ["t"], body=body),
             helper.make_node("ConcatFromSequence", ["t"], ["y"], axis=1)]
    m = _model(nodes, [_vi("x", F32, [2, 4]), _vi("w", F32, [2, 1])], [_vi("y")])
    check(m, _feeds(x=(2, 4), w=(2, 1)))


def _loop_building_a_sequence(trips):
    """Loop that inserts x * i into a carried sequence each iteration, then concatenates it."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], to=F32),
         helper.make_node("Mul", ["x", "fi"], ["xi"]),
         helper.make_node("SequenceInsert", ["seq_in", "xi"], ["seq_out"]),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body", [_vi("i", I64, []), _vi("cond", TensorProto.BOOL, []), _seq_vi("seq_in")],
        [_vi("cond_out", TensorProto.BOOL, []), _seq_vi("seq_out")])
    nodes = [helper.make_node("SequenceEmpty", [], ["s0"], dtype=F32),
             helper.make_node("Loop", ["trips", "", "s0"], ["s"], body=body),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0),
             helper.make_node("SequenceLength", ["s"], ["n"])]
    return nodes, body


def test_loop_carrying_a_sequence_is_unrolled():
    nodes, _ = _loop_building_a_sequence(3)
    m = _model(nodes, [_vi("x", F32, [2, 3])], [_vi("y"), _vi("n", I64)], [_i64("trips", 3)])
    x = _feeds(x=(2, 3))["x"]
    # numpy as the second oracle: onnx 1.23's ReferenceEvaluator drops a loop-carried sequence's items
    check(m, {"x": x}, [np.concatenate([x * 0, x * 1, x * 2]), np.array(3, np.int64)])


def test_loop_carrying_a_sequence_needs_its_trip_count_at_import():
    nodes, _ = _loop_building_a_sequence(3)
    m = _model(nodes, [_vi("x", F32, [2, 3]), _vi("trips", I64, [])], [_vi("y"), _vi("n", I64)])
    with pytest.raises(DynamicValueError, match=r"'#1' \(Loop\).*trip count.*static_inputs.*it carries a "
                                                r"sequence, so it is unrolled at import") as e:
        import_onnx(m)
    assert e.value.input_names == ["trips"]
    # bound, it unrolls
    g = import_onnx(m, static_inputs={"trips": np.array(2, np.int64)})
    x = _feeds(x=(2, 3))["x"]
    assert_close(run_graph(g, [x]), [np.concatenate([x * 0, x * 1]), np.array(2, np.int64)])


def _if_of_sequences(then_items, else_items, reads_outer=False):
    def branch(name, items):
        out = f"{name}_s"
        nodes = [helper.make_node("SequenceConstruct", items, [out])]
        if reads_outer:
            nodes = [helper.make_node("SequenceInsert", ["outer", items[0]], [out])]
        return helper.make_graph(nodes, name, [], [_seq_vi(out)])
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["outer"]),
             helper.make_node("If", ["c"], ["s"], then_branch=branch("then", then_items),
                              else_branch=branch("else", else_items)),
             helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)]
    return _model(nodes, [_vi("c", TensorProto.BOOL, []), _vi("a", F32, [2, 2]), _vi("b", F32, [2, 2])],
                  [_vi("y")])


@pytest.mark.parametrize("reads_outer", [False, True])
@pytest.mark.parametrize("cond", [True, False])
def test_if_giving_sequences_of_one_length(cond, reads_outer):
    m = _if_of_sequences(["a", "b"], ["b", "a"], reads_outer)
    check(m, {"c": np.array(cond), **_feeds(a=(2, 2), b=(2, 2))})


def test_if_giving_sequences_of_two_lengths_is_refused():
    m = _if_of_sequences(["a", "b"], ["a"])
    with pytest.raises(UnsupportedOpError, match=r"\(If\): its then branch gives \(a sequence of 2 f32 tensors\) "
                                                 r"and its else branch \(a sequence of 1 f32 tensors\), so a "
                                                 r"sequence's length would be known only at run time"):
        import_onnx(m)


def test_if_giving_sequences_of_two_element_types_says_so():
    """Branches whose sequences have one length but two element types: the refusal names the types,
    not a length known only at run time."""
    def branch(name, dtype):
        nodes = [helper.make_node("Cast", ["a"], [f"{name}_a"], to=dtype),
                 helper.make_node("SequenceConstruct", [f"{name}_a"], [f"{name}_s"])]
        return helper.make_graph(nodes, name, [], [_seq_vi(f"{name}_s", dtype)])
    nodes = [helper.make_node("If", ["c"], ["s"], then_branch=branch("then", F32), else_branch=branch("else", I64)),
             helper.make_node("SequenceLength", ["s"], ["n"])]
    m = _model(nodes, [_vi("c", TensorProto.BOOL, []), _vi("a", F32, [2])], [_vi("n", I64)])
    with pytest.raises(UnsupportedOpError, match=r"\(If\): its then branch gives \(a sequence of 1 f32 tensors\) "
                                                 r"and its else branch \(a sequence of 1 i64 tensors\), element "
                                                 r"types that differ; give both branches sequences of one type"):
        import_onnx(m)


# ----- refusals ------------------------------------------------------------------------

def test_a_sequence_graph_input_or_output_is_refused_saying_what_to_do():
    m = _model([helper.make_node("SequenceAt", ["s", "zero"], ["y"])], [_seq_vi("s")], [_vi("y")],
               [_i64("zero", 0)])
    with pytest.raises(UnsupportedOpError, match=r"graph input 's' is a sequence; .*separate inputs"):
        import_onnx(m)
    m = _model([helper.make_node("SequenceConstruct", ["a", "a"], ["s"])], [_vi("a", F32, [2])], [_seq_vi("s")])
    with pytest.raises(UnsupportedOpError, match=r"graph output 's' is a sequence; .*separate inputs / outputs"):
        import_onnx(m)


def test_a_length_unknown_at_import_is_refused_naming_the_node():
    m = _model([helper.make_node("SplitToSequence", ["x"], ["s"], axis=0, name="split"),
                helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)],
               [_vi("x", F32, ["batch", 3])], [_vi("y")])
    with pytest.raises(DynamicValueError, match=r"'split' \(SplitToSequence\): the sequence's length is not known "
                                                r"at import \(it splits symbolic dim 'batch'.*static length"):
        import_onnx(m)


def test_a_position_known_only_at_run_time_is_refused():
    m = _model([helper.make_node("SequenceConstruct", ["a", "a"], ["s"]),
                helper.make_node("SequenceAt", ["s", "i"], ["y"], name="at")],
               [_vi("a", F32, [2]), _vi("i", I64, [])], [_vi("y")])
    with pytest.raises(DynamicValueError, match=r"'at' \(SequenceAt\): its position.*run-time data.*static_inputs"):
        import_onnx(m)


@pytest.mark.parametrize("node, match", [
    (helper.make_node("SequenceAt", ["s", "two"], ["y"]), r"position 2 is out of range \[-2, 1\] for a sequence "
                                                          r"of 2 items"),
    (helper.make_node("SequenceInsert", ["s", "a", "minus3"], ["y"]), r"position -3 is out of range \[-2, 2\]"),
    (helper.make_node("Add", ["s", "a"], ["y"]), r"input 0 is a sequence of 2 f32 tensors, and Add takes tensors"),
    (helper.make_node("SequenceAt", ["a", "two"], ["y"]), r"input 0 must be a sequence, got a tensor"),
    (helper.make_node("SequenceInsert", ["s", "s"], ["y"]), r"inserts a sequence into a sequence; sequences of "
                                                            r"sequences are out of scope"),
], ids=["position out of range", "insert out of range", "a sequence fed to a tensor op",
        "a tensor fed as a sequence", "a sequence of sequences"])
def test_misuse_is_an_import_error_naming_the_node(node, match):
    m = _model([helper.make_node("SequenceConstruct", ["a", "a"], ["s"]), node],
               [_vi("a", F32, [2])], [_vi("y")], [_i64("two", 2), _i64("minus3", -3)])
    with pytest.raises(OnnxImportError, match=r"ONNX node '#1' \(\w+\): " + match):
        import_onnx(m)


def test_erasing_from_an_empty_sequence_is_refused():
    m = _model([helper.make_node("SequenceEmpty", [], ["s"]), helper.make_node("SequenceErase", ["s"], ["t"]),
                helper.make_node("SequenceLength", ["t"], ["y"])], [], [_vi("y", I64)])
    with pytest.raises(OnnxImportError, match=r"\(SequenceErase\): position -1 is out of range \[0, -1\] for a "
                                              r"sequence of 0 items"):
        import_onnx(m)


def test_sequence_map_over_an_empty_sequence_gives_an_empty_one():
    """Its items' type is the body's declared output type (f16 here; the sequence it maps is f32)."""
    body = helper.make_graph([helper.make_node("Cast", ["item"], ["out"], to=TensorProto.FLOAT16)], "body",
                             [_vi("item", F32, [2])],
                             [_vi("out", TensorProto.FLOAT16, [2])])
    m = _model([helper.make_node("SequenceEmpty", [], ["s"]),
                helper.make_node("SequenceMap", ["s"], ["t"], body=body),
                helper.make_node("SequenceInsert", ["t", "h"], ["u"]),
                helper.make_node("SequenceLength", ["u"], ["y"])],
               [_vi("h", TensorProto.FLOAT16, [2])], [_vi("y", I64)])
    h = np.ones(2, np.float16)
    assert_close(import_and_run(m, {"h": h})[1], onnxruntime_outputs(m, {"h": h}))


def test_concatenating_an_empty_sequence_is_refused():
    m = _model([helper.make_node("SequenceEmpty", [], ["s"]),
                helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)], [], [_vi("y")])
    with pytest.raises(AccelirError, match=r"empty sequence"):
        import_onnx(m)


def test_loop_reading_a_sequence_stops_where_its_condition_says():
    """A loop that reads an outer sequence at its iteration number is unrolled; its condition,
    computed in the body, is known at import in each iteration (3 of the 100 allowed run)."""
    body = helper.make_graph(
        [helper.make_node("SequenceAt", ["outer", "i"], ["item"]),
         helper.make_node("Add", ["acc", "item"], ["acc_out"]),
         helper.make_node("Add", ["i", "one"], ["i1"]),
         helper.make_node("Less", ["i1", "three"], ["cond_out"])],
        "body", [_vi("i", I64, []), _vi("cond", TensorProto.BOOL, []), _vi("acc", F32, [2])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("acc_out", F32, [2])])
    nodes = [helper.make_node("SplitToSequence", ["x"], ["outer"], axis=0, keepdims=0),
             helper.make_node("Loop", ["trips", "", "zeros"], ["y"], body=body)]
    m = _model(nodes, [_vi("x", F32, [5, 2])], [_vi("y")],
               [_i64("trips", 100), _i64("one", 1), _i64("three", 3),
                numpy_helper.from_array(np.zeros(2, np.float32), "zeros")])
    x = _feeds(x=(5, 2))["x"]
    check(m, {"x": x}, [x[0] + x[1] + x[2]])  # numpy: the ReferenceEvaluator's Loop reads the sequence as empty


def test_scan_body_reading_an_outer_sequence():
    """Each item a region reads becomes one region input (none for a constant item)."""
    body = helper.make_graph([helper.make_node("SequenceAt", ["s", "one"], ["item"]),
                              helper.make_node("Mul", ["item", "xi"], ["prod"]),
                              helper.make_node("Add", ["state", "prod"], ["state_out"]),
                              helper.make_node("Identity", ["state_out"], ["y"])],
                             "body", [_vi("state", F32, [2]), _vi("xi", F32, [2])],
                             [_vi("state_out", F32, [2]), _vi("y", F32, [2])])
    nodes = [helper.make_node("SequenceConstruct", ["c", "a"], ["s"]),
             helper.make_node("Scan", ["init", "xs"], ["final", "ys"], body=body, num_scan_inputs=1)]
    m = _model(nodes, [_vi("a", F32, [2]), _vi("init", F32, [2]), _vi("xs", F32, [3, 2])],
               [_vi("final"), _vi("ys")], [_i64("one", 1), numpy_helper.from_array(np.ones(2, np.float32), "c")])
    check(m, _feeds(a=(2,), init=(2,), xs=(3, 2)))


def _nested_loops_reading_a_sequence(trips: int, depth: int):
    """``depth`` Loops nested in each other, each ``trips`` iterations, the innermost reading an outer
    sequence: every level is unrolled at import, so the import builds trips ** depth bodies."""
    def body(level: int):
        if level == depth:
            nodes = [helper.make_node("SequenceAt", ["seq", "zero"], [f"item{level}"]),
                     helper.make_node("Add", [f"acc{level}", f"item{level}"], [f"acc{level}_out"])]
        else:
            nodes = [helper.make_node("Loop", ["trips", "", f"acc{level}"], [f"acc{level}_out"],
                                      body=body(level + 1))]
        nodes.append(helper.make_node("Identity", [f"c{level}"], [f"c{level}_out"]))
        inputs = [_vi(f"i{level}", I64, []), _vi(f"c{level}", TensorProto.BOOL, []), _vi(f"acc{level}", F32, [2])]
        return helper.make_graph(nodes, f"body{level}", inputs,
                                 [_vi(f"c{level}_out", TensorProto.BOOL, []), _vi(f"acc{level}_out", F32, [2])])
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0, keepdims=0),
             helper.make_node("Loop", ["trips", "", "x0"], ["y"], body=body(1), name="outer")]
    return _model(nodes, [_vi("x", F32, [3, 2]), _vi("x0", F32, [2])], [_vi("y")],
                  [_i64("trips", trips), _i64("zero", 0)])


def test_nested_loops_unrolled_at_import_are_bounded_in_nodes():
    """Each level's iteration limit alone lets nested loops multiply: a file of a few hundred bytes
    would build 150 ** 2 bodies (and 256 ** 3 one level deeper).  The nodes one unrolled loop
    builds, its nested loops included, are bounded, so the import is refused in bounded time."""
    x = _feeds(x=(3, 2), x0=(2,))
    check(_nested_loops_reading_a_sequence(4, 2), x, [x["x0"] + 16 * x["x"][0]])
    with pytest.raises(UnsupportedOpError, match=r"Loop.*unrolled at import.*over 32,768 nodes"):
        import_onnx(_nested_loops_reading_a_sequence(150, 2))


def test_nested_sequence_maps_are_bounded_in_nodes():
    """SequenceMap imports its body once per item, and a body may split its item and map again: the
    items multiply with each level (200 * 200 bodies here).  The nodes one SequenceMap builds, the
    maps nested in its body included, are bounded as an unrolled Loop's are."""
    def nested(n: int):
        inner = helper.make_graph([helper.make_node("Neg", ["cell"], ["neg"])], "inner",
                                  [_vi("cell", F32, [1])], [_vi("neg", F32, [1])])
        outer = helper.make_graph([helper.make_node("SplitToSequence", ["row"], ["cells"], axis=0),
                                   helper.make_node("SequenceMap", ["cells"], ["negs"], body=inner),
                                   helper.make_node("ConcatFromSequence", ["negs"], ["out"], axis=0)],
                                  "outer", [_vi("row", F32, [n])], [_vi("out", F32, [n])])
        nodes = [helper.make_node("SplitToSequence", ["x"], ["rows"], axis=0, keepdims=0),
                 helper.make_node("SequenceMap", ["rows"], ["outs"], body=outer, name="map"),
                 helper.make_node("ConcatFromSequence", ["outs"], ["y"], axis=0, new_axis=1)]
        return _model(nodes, [_vi("x", F32, [n, n])], [_vi("y")])
    x = _feeds(x=(3, 3))  # numpy as the oracle: onnxruntime 1.32 fails to inline nested SequenceMaps
    assert_close(import_and_run(nested(3), x)[1], [-x["x"]])
    assert_close(_lowered(nested(3), x), [-x["x"]])
    with pytest.raises(UnsupportedOpError, match=r"'map' \(SequenceMap\).*over 32,768 nodes"):
        import_onnx(nested(200))


@pytest.mark.parametrize("split", [None, 1, "sizes", "run-time sizes"])
def test_splitting_into_too_many_items_is_refused_before_building_them(split):
    """SplitToSequence builds one slice per item: a declared dim of 10 ** 12 would ask the importer for
    10 ** 12 nodes.  More items than one unrolling may build are refused, naming the count."""
    n = 10 ** 12 if split in (None, 1) else 40_000
    inits = [_i64("split", 1)] if split == 1 else [_i64("split", [1] * n)] if split == "sizes" else []
    inputs = [_vi("x", F32, [n])] + ([_vi("split", I64, [n])] if split == "run-time sizes" else [])
    nodes = [helper.make_node("SplitToSequence", ["x"] + ([] if split is None else ["split"]), ["s"], name="split"),
             helper.make_node("SequenceLength", ["s"], ["y"])]
    with pytest.raises(UnsupportedOpError, match=rf"'split' \(SplitToSequence\): it splits into {n:,} items, over"):
        import_onnx(_model(nodes, inputs, [_vi("y", I64)], inits))
