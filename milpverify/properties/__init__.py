r"""Relaxed top-K (RTK) and affinity robustness (Leino & Fredrikson, NeurIPS 2021), exactly.

Both properties say "some top-k set of x survives": with the labels sorted by their logit at
x (`order`, ties broken by the lower index) and `T_k = order[:k]`, the property holds at x'
iff *some* k in a set `ks` of "certifying" k's (fixed by x) keeps `F^k(x') = T_k`:

- relaxed top-K (`RelaxedTopK(K)`): `ks = {1, ..., K}`;
- affinity (`Affinity(groups)`): `ks = {k : T_k ⊆ S for some group S}` (the reading of the
  paper's code, `gloro.relaxations`, default ``semantics="subset"``), or with
  ``semantics="full"`` `ks = {|S| : T_{|S|} = S}` (the slides' formula
  `F^{|S|}(x) ⊆ S` read literally: as `|F^{|S|}(x)| = |S|`, the group must *be* the top-|S|
  set at x). A group that no top-k set of x fits never certifies; when no group does,
  `ks` is empty and x itself violates the property (distance 0).

Tie convention (as in `rho`: ties count as adversarial): `F^k(x') = T_k` iff
`min_{i in T_k} y_i > max_{j not in T_k} y_j`, so the top-k set is *changed* at x' iff
some pair (i in T_k, j not in T_k) has `y_j - y_i >= 0`. The property is violated iff

    AND_{k in ks}  OR_{i in T_k, j not in T_k}  y_j - y_i >= 0,

a conjunction of disjunctions, encoded with binaries over the same network MILP as `rho`
(`encode_network`). `violation(y) = min_{k in ks} (max_{j not in T_k} y_j - min_{i in T_k} y_i)`
is `>= 0` exactly on that set; K = 1 is ordinary misclassification.
"""

from milpverify.properties.certify import (
                                           certify_affinity,
                                           certify_properties,
                                           certify_property,
                                           certify_topk,
)
from milpverify.properties.rho import rho_affinity, rho_property, rho_topk
from milpverify.properties.spec import (
                                           Affinity,
                                           Property,
                                           RelaxedTopK,
                                           load_affinity,
                                           load_groups,
                                           parse_property,
)

__all__ = [
    "Affinity", "Property", "RelaxedTopK", "certify_affinity", "certify_properties",
    "certify_property", "certify_topk", "load_affinity", "load_groups", "parse_property",
    "rho_affinity", "rho_property", "rho_topk",
]
