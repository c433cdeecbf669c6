"""How a template's parse becomes the code that renders it: code generation that evaluates
nothing while compiling (`Unevaluated`) and charges the render's budget for what it builds
(`BudgetedCode`), code that runs repeatedly charged for its size (`instrument`), and a bound on
how many nodes a template holds, counted before any code is generated (`refuse_too_many_nodes`),
and the cache of compiled templates, bounded by the nodes they hold (`CompiledCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame, operators

from utils import template_budget as budget

# No sensible template comes near (a long prompt with a hundred variables and loops holds some
# hundreds): past it, generating and compiling the code took seconds (50,000 nodes, 4 s).
MAX_TEMPLATE_NODES = 5_000
_Compiled = TypeVar("_Compiled")


class TooManyNodes(Exception):
    """The template holds more than MAX_TEMPLATE_NODES nodes."""


def refuse_too_many_nodes(ast: nodes.Template) -> int:
    """How many nodes `ast` holds; TooManyNodes when more than MAX_TEMPLATE_NODES (counting
    stops there)."""
    count = 0
    pending: list[nodes.Node] = [ast]
    while pending:
        count += 1
        if count > MAX_TEMPLATE_NODES:
            raise TooManyNodes()
        pending.extend(pending.pop().iter_child_nodes())
    return count


class CompiledCache(Generic[_Compiled]):
    """The compiled templates most recently used, by source: at most `max_entries` of them,
    holding at most `max_nodes` nodes together (the least recently used go first). Shared by
    the render and save-check threads."""

    def __init__(self, *, max_nodes: int, max_entries: int = 256) -> None:
        self.max_nodes = max_nodes
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[_Compiled, int]] = OrderedDict()
        self._nodes = 0
        self._lock = threading.Lock()

    def get(self, source: str) -> _Compiled | None:
        with self._lock:
            entry = self._entries.get(source)
            if entry is None:
                return None
            self._entries.move_to_end(source)
            return entry[0]

    def put(self, source: str, compiled: _Compiled, node_count: int) -> None:
        with self._lock:
            if source in self._entries:
                return  # compiled meanwhile by another thread
            self._entries[source] = (compiled, node_count)
            self._nodes += node_count
            while self._nodes > self.max_nodes or len(self._entries) > self.max_entries:
                _, (_, evicted_nodes) = self._entries.popitem(last=False)
                self._nodes -= evicted_nodes

    def held(self) -> tuple[int, int]:
        """(entries, nodes) held now."""
        with self._lock:
            return len(self._entries), self._nodes


def instrument(ast: nodes.Template) -> None:
    """Every for loop's iterable counted, one step per iteration, and every piece of code that
    can run again and again charged for its size each time it runs, a step per
    budget.NODES_PER_STEP of its nodes (a loop body of 3,000 `if`s, run 10,000 times, was
    10,000 steps and 24 s): a loop's body and its `if` filter (run for every item, kept or
    not), a macro's or call block's body with its default arguments (evaluated on every call
    that leaves them out), and a block's body (`self.a()` renders it anew)."""
    loops = list(ast.find_all(nodes.For))
    for loop in loops:
        loop.iter = nodes.Call(nodes.EnvironmentAttribute("counted"), [loop.iter], [], None, None)
    sizes = _charged_sizes(ast)
    for loop in loops:
        if loop.test is not None:
            charge = _charge(sizes[id(loop.test)])
            if charge is not None:  # `spent` returns "": the test's own value decides
                loop.test = nodes.Or(charge, loop.test)
    bodies: list[nodes.For | nodes.Macro | nodes.CallBlock | nodes.Block] = [
        *loops,
        *ast.find_all(nodes.Macro),
        *ast.find_all(nodes.CallBlock),
        *ast.find_all(nodes.Block),
    ]
    for node in bodies:
        defaults = node.defaults if isinstance(node, nodes.Macro | nodes.CallBlock) else []
        size = sum(sizes[id(part)] for part in [*node.body, *defaults])
        # A block counts for nothing in the code around it: its own charge is never rounded
        # away (a loop of many small blocks would run for nearly nothing).
        charge = _charge(size, round_up=isinstance(node, nodes.Block))
        if charge is not None:
            node.body.insert(0, nodes.Output([charge]))


def _charge(size: int, *, round_up: bool = False) -> nodes.Call | None:
    """A call charging code of `size` nodes as it runs; None for code too small to charge."""
    steps = -(-size // budget.NODES_PER_STEP) if round_up else size // budget.NODES_PER_STEP
    if not steps:
        return None
    return nodes.Call(nodes.EnvironmentAttribute("spent"), [nodes.Const(steps)], [], None, None)


def _charged_sizes(ast: nodes.Node) -> dict[int, int]:
    """Each node's count of nodes, itself and all it holds, by id, less the blocks it holds: a
    block's body charges itself each time it runs (`self.a()` too), so the code around it
    charging for it as well charged it twice. A block counts for nothing around it. One pass,
    children first (walking each block's body anew cost a square of the nesting's depth)."""
    sizes: dict[int, int] = {}
    pending: list[tuple[nodes.Node, bool]] = [(ast, False)]
    while pending:
        node, children_done = pending.pop()
        if isinstance(node, nodes.Block):
            sizes[id(node)] = 0
            pending.extend((child, False) for child in node.iter_child_nodes())
        elif children_done:
            children = node.iter_child_nodes()
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        else:
            pending.append((node, True))
            pending.extend((child, False) for child in node.iter_child_nodes())
    return sizes


class Unevaluated(CodeGenerator):
    """Code generation that evaluates nothing: jinja's optimizer and its folding of constant
    output would run filters and operators while compiling, outside any render's budget (on
    save, `{{ "x y"|center(999990)|wordwrap(1) }}` took minutes), and the optimizer takes time
    cubic in how deeply expressions nest. Everything a template computes, it computes when
    rendered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optimizer = None

    def _output_child_to_const(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)


class Variables(Unevaluated, meta.TrackingCodeGenerator):
    """`jinja2.meta.find_undeclared_variables`, without evaluating anything."""


class BudgetedCode(Unevaluated):
    """`a ~ b` joins through the environment, which measures the parts before joining them;
    comparisons and slices are charged for what they walk and copy, literals (lists, tuples,
    dicts) weighed as they are built."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("(environment.compared(")
        self.visit(node.expr, frame)
        self.write(")")
        for index, operand in enumerate(node.ops, 1):
            self.write(f" {operators[operand.op]} environment.compared(")
            self.visit(operand.expr, frame)
            self.write(f", {operand.op in ('in', 'notin')}, {index == len(node.ops)})")
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.held(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # a target (`{% for a, b in ... %}`): nothing is built
            super().visit_Tuple(node, frame)
            return
        self.write("environment.held(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        # Each key hashed, as deep as it goes, and keys that share a hash: charged.
        self.write("environment.held(environment.literal_dict((")
        for item in node.items:
            self.write("(environment.compared(")
            self.visit(item.key, frame)
            self.write("), ")
            self.visit(item.value, frame)
            self.write("), ")
        self.write(")))")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):  # the environment's getitem, charged
            super().visit_Getitem(node, frame)
            return
        self.write("environment.built(")  # jinja slices inline, bypassing the environment
        super().visit_Getitem(node, frame)
        self.write(")")
