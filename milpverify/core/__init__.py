"""The decision core: queries, witness checks, bounds on the unsafe set, attacks, the decide loop
and the bracket on rho.
"""
