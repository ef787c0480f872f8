"""What every command shares on the terminal: the consoles and one-line errors, the click option
types, and the runtime options (model, bundle, quant, memory) that build a session."""
