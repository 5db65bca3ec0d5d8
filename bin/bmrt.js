#!/usr/bin/env node
import { launch } from './launch.js'
launch('bmrt', '../dist/src/cli/bmrt.js')
