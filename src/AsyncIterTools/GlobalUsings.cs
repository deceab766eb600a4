global using System.Runtime.CompilerServices;
global using System.Runtime.ExceptionServices;
global using AsyncIterTools.Internal;
global using AsyncTools.Polyfills;
