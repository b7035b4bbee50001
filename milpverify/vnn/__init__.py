"""VNN-LIB and VNN-COMP: the spec reader, result files, and the staged decision of a property."""
