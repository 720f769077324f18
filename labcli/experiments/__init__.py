"""The substance behind the verbs: one module per recipe family."""
