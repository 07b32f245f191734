"""The type stubs (fibquant/_native.pyi) name every public item of the native module, and
nothing it lacks."""

import ast
import pathlib

import fibquant._native as native


def stub_tree():
    path = pathlib.Path(__file__).parent.parent / "fibquant" / "_native.pyi"
    return ast.parse(path.read_text())


def test_stubs_match_the_native_module():
    tree = stub_tree()
    stub_names, stub_members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stub_names.add(node.name)
            if isinstance(node, ast.ClassDef):
                stub_members[node.name] = {
                    n.name if isinstance(n, ast.FunctionDef) else n.target.id
                    for n in node.body
                    if isinstance(n, ast.FunctionDef) or isinstance(n, ast.AnnAssign)
                } - {"__init__"}
        elif isinstance(node, ast.AnnAssign):
            stub_names.add(node.target.id)
    public = {n for n in dir(native) if not n.startswith("_")} | {"__version__"}
    assert public <= stub_names, public - stub_names
    assert stub_names - {"F32", "U8", "SideCode"} <= public, stub_names - public
    for cls, members in stub_members.items():
        real = {n for n in dir(getattr(native, cls)) if not n.startswith("_")}
        if issubclass(getattr(native, cls), BaseException):
            real = {"layer", "head", "position", "row"} if cls == "FibQuantError" else set()
        assert members == real, (cls, members ^ real)
