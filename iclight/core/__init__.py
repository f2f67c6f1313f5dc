"""The input contract, the option table, the checked values every door makes, configuration: no torch."""
