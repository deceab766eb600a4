using System.Text.Json;
using System.Text.Json.Serialization;
using AsyncPrimitives.Postgres.Tests.Support;
using AsyncTools.Testing;

namespace AsyncPrimitives.Postgres.Tests;

/// <summary>
/// An item is stored as the JSON text System.Text.Json wrote for it, and read back from that text: whatever
/// System.Text.Json writes and reads comes back as put, including what depends on the order of properties (a type
/// discriminator must come first) and strings PostgreSQL's <c>jsonb</c> would refuse (U+0000).
/// </summary>
public sealed class QueuePayloadTests(PostgresServer server) : PostgresTest(server)
{
    [JsonPolymorphic]
    [JsonDerivedType(typeof(Email), "email")]
    [JsonDerivedType(typeof(Sms), "sms")]
    public abstract record Job;

    public sealed record Email(string To, string Subject) : Job;

    public sealed record Sms(string To) : Job;

    [JsonPolymorphic]
    [JsonDerivedType(typeof(Reminder), "reminder")]
    public record Message(string Text);

    public sealed record Reminder(string Text, DateTimeOffset At) : Message(Text);

    [PostgresFact]
    public async Task ItemsOfAnAbstractPolymorphicType_ComeBackAsPut()
    {
        Job[] jobs = [new Email("a@example.com", "hello"), new Sms("+100")];
        (await PutAndGetAsync(jobs)).Should().Equal(jobs);
    }

    [PostgresFact]
    public async Task ItemsOfAConcretePolymorphicType_ComeBackAsPut_TheBaseAndTheDerived()
    {
        Message[] messages = [new Reminder("call", DateTimeOffset.UnixEpoch), new Message("plain")];
        (await PutAndGetAsync(messages)).Should().Equal(messages);
    }

    [PostgresFact]
    public async Task AStringWithU0000_ComesBackAsPut()
    {
        (await PutAndGetAsync(["a\0b"])).Should().Equal("a\0b");
    }

    [PostgresFact]
    public async Task TheStoredPayload_IsTheTextSystemTextJsonWrote()
    {
        Member member = await JoinAsync();
        PostgresQueue<Job> queue = member.Coordinator.CreateQueue<Job>("jobs");
        Job job = new Email("z@example.com", "a subject longer than the keys");
        await queue.PutAsync(job);

        (await ScalarAsync<string>("SELECT payload::text FROM @schema.queue_items"))
            .Should().Be(JsonSerializer.Serialize(job), "the properties keep their order and nothing is normalized");
    }

    /// <summary>An item type that checks its data, as many domain types do: a negative amount is refused.</summary>
    public sealed record Amount
    {
        public Amount(int value)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Value = value;
        }

        public int Value { get; }
    }

    /// <summary>The same JSON as <see cref="Amount"/>, unchecked: puts what <see cref="Amount"/> refuses.</summary>
    public sealed record LooseAmount(int Value);

    /// <summary>An item type whose constructor refuses a missing address.</summary>
    public sealed record Mail
    {
        public Mail(string to)
        {
            ArgumentNullException.ThrowIfNull(to);
            To = to;
        }

        public string To { get; }
    }

    [PostgresFact]
    public async Task ATypeWhoseConstructorValidates_IsAcceptedAsAQueueItem_AndComesBackAsPut()
    {
        (await PutAndGetAsync([new Mail("a@example.com")])).Should().Equal(new Mail("a@example.com"));
    }

    [PostgresFact]
    public async Task AnItemTheTypesOwnCodeRefuses_FailsTheGet_AndTheWholeBatchIsGivenBack_NotLeftLeasedToNoOne()
    {
        var time = new CountingTimeProvider();
        Member member = await JoinAsync(o => o.TimeProvider = time);
        await member.Coordinator.CreateQueue<LooseAmount>("amounts").PutManyAsync([new LooseAmount(1), new LooseAmount(-5)]);
        PostgresQueue<Amount> amounts = member.Coordinator.CreateQueue<Amount>("amounts", new PostgresQueueOptions { MaxAttempts = 2 });

        await FluentActions.Awaiting(async () => await amounts.GetManyAsync(2, Bound)).Should().ThrowAsync<PostgresCoordinationException>()
            .WithInnerException(typeof(ArgumentOutOfRangeException));
        (await amounts.CountAsync()).Should().Be(2, "both items were given back");
        (await ScalarAsync<long>("SELECT count(*) FROM @schema.queue_items WHERE lease_token IS NOT NULL"))
            .Should().Be(0, "nothing stays leased (and renewed by the heartbeat) for a delivery nobody has");
    }

    /// <summary>A type whose constructor refuses what it does not support with <see cref="NotSupportedException"/>,
    /// the exception System.Text.Json refuses a type with (it wraps the constructor's in its own).</summary>
    public sealed record Currency
    {
        public Currency(string code)
        {
            if (code is not ("EUR" or "USD"))
            {
                throw new NotSupportedException($"Currency {code} is not supported.");
            }

            Code = code;
        }

        public string Code { get; }
    }

    [PostgresFact]
    public async Task ATypeWhoseConstructorRefusesWithNotSupported_IsAccepted_AndComesBackAsPut()
    {
        (await PutAndGetAsync([new Currency("EUR")])).Should().Equal(new Currency("EUR"));
    }

    public interface IShape
    {
        double Size { get; }
    }

    public sealed record Circle(double Size) : IShape;

    /// <summary>Writes a shape as its size and reads a size as a circle.</summary>
    public sealed class ShapeConverter : JsonConverter<IShape>
    {
        public override IShape Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => new Circle(reader.GetDouble());

        public override void Write(Utf8JsonWriter writer, IShape value, JsonSerializerOptions options) => writer.WriteNumberValue(value.Size);
    }

    /// <summary>An interface-typed property read through a converter of its own.</summary>
    public sealed record Drawing(string Name, [property: JsonConverter(typeof(ShapeConverter))] IShape Shape);

    /// <summary>A get-only property of an interface type: written, never read (no setter, no constructor parameter).</summary>
    public sealed record Labelled(int Number)
    {
        public IFormattable Label => Number;
    }

    [PostgresFact]
    public async Task PropertiesReadThroughTheirOwnConverter_OrOnlyWritten_AreAccepted_AndComeBackAsPut()
    {
        var drawing = new Drawing("d", new Circle(2));
        (await PutAndGetAsync([drawing])).Should().Equal(drawing);
        (await PutAndGetAsync([new Labelled(3)])).Should().Equal(new Labelled(3));
    }

    public sealed record Order(int Number, string Name);

    [PostgresFact]
    public async Task NewJsonSerializerOptions_NotUsedBefore_WriteAndReadTheItems()
    {
        // Options System.Text.Json has not used yet (as at a service's start-up) have no resolver until their first use.
        var options = new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
        Member member = await JoinAsync(o => o.JsonSerializerOptions = options);
        PostgresQueue<Order> queue = member.Coordinator.CreateQueue<Order>("orders");
        FluentActions.Invoking(() => member.Coordinator.CreateQueue<int>("numbers")).Should().NotThrow();
        await queue.PutAsync(new Order(1, "x"));

        (await ScalarAsync<string>("SELECT payload::text FROM @schema.queue_items")).Should().Be("{\"number\":1,\"name\":\"x\"}");
        await using PostgresDelivery<Order> delivery = await queue.GetAsync(Bound);
        delivery.Item.Should().Be(new Order(1, "x"));
        options.IsReadOnly.Should().BeTrue("CreateQueue fixes the options, as System.Text.Json's first use does");
    }

    /// <summary>A get-only property of an interface type on a type read through its constructor.</summary>
    public sealed record Tagged(int Number)
    {
        public IFormattable Label => Number;
    }

    /// <summary>A get-only property of an interface type on a type with a parameterless constructor.</summary>
    public sealed class Counter
    {
        public int Count { get; set; }

        public IFormattable Label => Count;
    }

    [PostgresFact]
    public async Task OptionsPreferringPopulate_AGetOnlyPropertyNeverPopulated_IsAccepted()
    {
        // System.Text.Json does not populate a property of a type read through a parameterized constructor, nor a
        // read-only property it ignores; nor does it create an object it populates.
        var populate = new JsonSerializerOptions { PreferredObjectCreationHandling = JsonObjectCreationHandling.Populate };
        Member member = await JoinAsync(o => o.JsonSerializerOptions = populate);
        PostgresQueue<Tagged> tagged = member.Coordinator.CreateQueue<Tagged>("tagged");
        await tagged.PutAsync(new Tagged(3));
        await using (PostgresDelivery<Tagged> delivery = await tagged.GetAsync(Bound))
        {
            delivery.Item.Should().Be(new Tagged(3));
        }

        FluentActions.Invoking(() => member.Coordinator.CreateQueue<Counter>("counters"))
            .Should().NotThrow("a populated interface-typed value is filled, never created");

        var ignoring = new JsonSerializerOptions
        {
            PreferredObjectCreationHandling = JsonObjectCreationHandling.Populate, IgnoreReadOnlyProperties = true,
        };
        Member other = await JoinAsync(o => o.JsonSerializerOptions = ignoring);
        PostgresQueue<Counter> counters = other.Coordinator.CreateQueue<Counter>("counters");
        await counters.PutAsync(new Counter { Count = 2 });
        await using PostgresDelivery<Counter> counted = await counters.GetAsync(Bound);
        counted.Item.Count.Should().Be(2);
    }

    [PostgresFact]
    public async Task AValueSystemTextJsonDoesNotWrite_ThrowsArgumentExceptionNamingTheParameter_WithItsExceptionInside()
    {
        Member member = await JoinAsync();
        PostgresQueue<double> queue = member.Coordinator.CreateQueue<double>("numbers");

        FluentActions.Invoking(() => { _ = queue.PutAsync(double.NaN); }).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "item" && e.InnerException != null);
        FluentActions.Invoking(() => { _ = queue.PutManyAsync([1.0, double.PositiveInfinity]); }).Should().Throw<ArgumentException>()
            .Where(e => e.ParamName == "items" && e.Message.Contains("index 1"));
        (await queue.UnfinishedAsync()).Should().Be(0);
    }

    public sealed class Node
    {
        public Node? Next { get; set; }
    }

    [PostgresFact]
    public async Task AnItemSystemTextJsonCannotWrite_ThrowsArgumentExceptionAtTheCall_AndPutsNothingOfItsBatch()
    {
        Member member = await JoinAsync();
        PostgresQueue<Node> queue = member.Coordinator.CreateQueue<Node>("nodes");
        var cycle = new Node();
        cycle.Next = cycle;

        FluentActions.Invoking(() => { _ = queue.PutAsync(cycle); }).Should().Throw<ArgumentException>()
            .WithParameterName("item").WithInnerException<JsonException>();
        FluentActions.Invoking(() => { _ = queue.PutManyAsync([new Node(), cycle]); }).Should().Throw<ArgumentException>()
            .WithParameterName("items").Where(e => e.Message.Contains("index 1"));
        (await queue.UnfinishedAsync()).Should().Be(0, "a refused batch puts none of its items");
    }

    /// <summary>Puts <paramref name="items"/> on a new queue, takes them in one get, completes them, and returns what
    /// the get read.</summary>
    private async Task<T[]> PutAndGetAsync<T>(T[] items)
    {
        Member member = await JoinAsync();
        PostgresQueue<T> queue = member.Coordinator.CreateQueue<T>("items");
        await queue.PutManyAsync(items);
        IReadOnlyList<PostgresDelivery<T>> deliveries = await queue.GetManyAsync(items.Length, Bound);
        await queue.CompleteManyAsync(deliveries);
        (await queue.UnfinishedAsync()).Should().Be(0);
        return [.. deliveries.Select(d => d.Item)];
    }
}
