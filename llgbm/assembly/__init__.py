"""What params build for more than one recipe, built in one place.

It sits beside `config`, above the components: it reads the config's sections and hands the components
plain values, so no component sees the config and no recipe rebuilds what another built (`deltas`: the
delta definition; `objective`: the behaviour term and the combination with the weight term).
"""
