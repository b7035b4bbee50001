"""The milpverify IR: canonical ops, the `Network` graph, simplification passes."""
