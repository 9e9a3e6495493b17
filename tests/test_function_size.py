"""No function in the package is over 80 lines of code (the project's standard).

A line of code is a line with something on it other than a comment or a docstring, so
a long docstring or a commented derivation costs nothing. A function's lines include
those of the functions defined inside it: a factory and its closures are read as one.
"""

import ast
import pathlib
import textwrap

import metaopt

LIMIT = 80
ROOT = pathlib.Path(metaopt.__file__).parent
DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def docstring_lines(tree: ast.AST) -> set[int]:
    """The line numbers of every module, class and function docstring in ``tree``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (*DEFS, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> dict[str, int]:
    """Lines of code of each function in ``source``, by ``name:first line``."""
    tree = ast.parse(source)
    text = source.splitlines()
    docs = docstring_lines(tree)

    def is_code(i: int) -> bool:
        stripped = text[i - 1].strip()
        return i not in docs and bool(stripped) and not stripped.startswith("#")

    return {
        f"{node.name}:{node.lineno}": sum(map(is_code, range(node.lineno, node.end_lineno + 1)))
        for node in ast.walk(tree)
        if isinstance(node, DEFS)
    }


def test_code_lines_skip_docstrings_comments_and_blank_lines():
    source = textwrap.dedent(
        '''
        def outer(x):
            """A docstring
            over two lines."""
            # a comment

            def inner(y):
                """One line."""
                return y + 1  # code with a comment counts

            s = """a string that is
            not a docstring"""
            return inner(x), s
        '''
    )
    # Counted by hand: outer's def, inner's def, inner's return, the two lines of s,
    # outer's return; inner alone: its def and its return.
    assert code_lines(source) == {"outer:2": 6, "inner:7": 2}


def test_no_function_is_over_the_limit():
    too_long = [
        f"{path.relative_to(ROOT)}:{name} has {n} lines of code"
        for path in sorted(ROOT.rglob("*.py"))
        for name, n in code_lines(path.read_text()).items()
        if n > LIMIT
    ]
    assert not too_long, f"functions over {LIMIT} lines of code: {too_long}"
