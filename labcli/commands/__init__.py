"""One thin module per verb: parse, load the recipe, call one function."""
