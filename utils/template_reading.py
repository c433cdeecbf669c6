"""What a template's parse says before it renders: whether it could ever render (a tag loading
another template, a filter or test the sandbox lacks), and the names it sets for itself."""

from __future__ import annotations

from jinja2 import Environment, TemplateSyntaxError, nodes

_LOADING_TAGS: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}
_NEVER_RENDERING: tuple[type[nodes.Node], ...] = (*_LOADING_TAGS, nodes.Filter, nodes.Test)


def never_rendering(ast: nodes.Template, environment: Environment) -> TemplateSyntaxError | None:
    """The error, with its line, of the first thing that would fail every render it runs in: a
    tag loading another template (a prompt has none to load), or a filter or test the sandbox
    lacks (jinja refuses those as it compiles only outside an `if`)."""
    for node in ast.find_all(_NEVER_RENDERING):
        if isinstance(node, nodes.Filter):
            if node.name not in environment.filters:
                return TemplateSyntaxError(f"No filter named {node.name!r}.", node.lineno)
        elif isinstance(node, nodes.Test):
            if node.name not in environment.tests:
                return TemplateSyntaxError(f"No test named {node.name!r}.", node.lineno)
        else:
            tag = _LOADING_TAGS[type(node)]
            message = f"`{tag}` is not available: there are no other templates to load"
            return TemplateSyntaxError(message, node.lineno)
    return None


def assigned(ast: nodes.Template) -> set[str]:
    """Names the template sets where the rest of it sees them (at its top level, or in a branch
    of an `if` there: jinja counts a name set only in a branch as undeclared), never asked of
    the caller. Not names set in a scope of their own (a macro's, call block's, loop's, `with`'s
    or block's body), a loop's targets, nor by a `set` reading its own name (`{% set topic =
    topic|title %}`). A read where the template left a name unset fails the render."""
    assigned: set[str] = set()
    pending: list[nodes.Node] = list(ast.body)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.If):  # its `elif`s are Ifs in turn
            pending.extend([*node.body, *node.elif_, *node.else_])
        elif isinstance(node, nodes.Macro):
            assigned.add(node.name)
        elif isinstance(node, nodes.Assign | nodes.AssignBlock):
            assigned |= _names(node.target, "store") - _names(node, "load")
    return assigned


def _names(node: nodes.Node, ctx: str) -> set[str]:
    """The names `node` is or holds, in context `ctx` ("load", "store")."""
    found = [node, *node.find_all(nodes.Name)]
    return {name.name for name in found if isinstance(name, nodes.Name) and name.ctx == ctx}
